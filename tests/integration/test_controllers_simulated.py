"""Workload controllers end to end: a real API server, the real scheduler and simulated nodes.

Unlike test_controllers_{deployment,replicaset,job}.py, where the test plays the kubelet by patching pod
status, here nothing is faked by the test: the scheduler binds the pods the controllers create to three
simulated nodes, whose agent (pocketkube.kubelet.simulated) reports them Running and Ready, runs them to
completion or failure as their annotations ask, and finishes their graceful deletion.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import harness
import pytest
import pytest_asyncio
from cluster import Cluster
from harness import bare_server, connect, create_namespace, found, resource, running

from pocketkube.client.rest import Client
from pocketkube.controllers.deployment import DeploymentController
from pocketkube.controllers.job import TRACKING_FINALIZER, JobController
from pocketkube.controllers.replicaset import ReplicaSetController
from pocketkube.kubelet.simulated import (
    EXIT_CODE_ANNOTATION,
    RUN_SECONDS_ANNOTATION,
    SimulatedNodes,
    SimulationConfig,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")
Obj = dict[str, Any]
PODS, DEPLOY = resource("", "pods"), resource("apps", "deployments")
RS, JOBS = resource("apps", "replicasets"), resource("batch", "jobs")
REVISION = "deployment.kubernetes.io/revision"
NODE_NAMES = {"simctl-0", "simctl-1", "simctl-2"}
# The agent counts the readiness delay from startedAt, which has whole seconds: with 1 s a new pod becomes
# Ready at the next second boundary, never at once, so a rollout has to wait for each new pod.
SIM = SimulationConfig(name_prefix="simctl-", pod_ready_delay=1.0, delete_delay=0.1, lease_interval=5)
_ns_counter = itertools.count()
# The checks return a value or None: a value, even an empty list, is the answer.
eventually = partial(harness.eventually, until=found)


class FastJobController(JobController):
    """Upstream's 10 s pod-failure back-off and 1 s sync batching shrunk, so that a failing Job gives up
    within seconds."""

    pod_failure_backoff = 0.5
    max_pod_failure_backoff = 2.0
    sync_batch_period = 0.05


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    yield from bare_server()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(cluster: Cluster) -> AsyncIterator[Client]:
    """The API client, with the workload controllers, the scheduler and three simulated nodes running."""
    async with connect(cluster) as c, running(
            c, scheduler=True, nodes=SimulatedNodes(c, len(NODE_NAMES), SIM), identity="test-simulated",
            controllers=(DeploymentController, ReplicaSetController, FastJobController)):
        yield c


async def namespace(client: Client) -> str:
    return await create_namespace(client, f"sim-{next(_ns_counter)}")


def is_ready(pod: Obj) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def is_live(pod: Obj) -> bool:
    """Counted by the controllers: neither terminating nor terminated."""
    return not pod["metadata"].get("deletionTimestamp") and \
        (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def running_on_node(pod: Obj) -> bool:
    """Bound to a simulated node by the scheduler and reported Running and Ready by its agent."""
    return pod["spec"].get("nodeName") in NODE_NAMES and pod["status"].get("phase") == "Running" and is_ready(pod)


def image_of(obj: Obj) -> str:
    spec = obj["spec"]["template"]["spec"] if "template" in obj["spec"] else obj["spec"]
    return str(spec["containers"][0]["image"])


def condition(obj: Obj, ctype: str) -> Obj | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == ctype), None)


async def pods(client: Client, ns: str, selector: str) -> list[Obj]:
    return list((await client.list(PODS, ns, label_selector=selector))["items"])


# --- Deployment ---------------------------------------------------------------------------------------------


REPLICAS = 6


def web_deployment(ns: str, image: str) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": ns, "annotations": {"kubernetes.io/change-cause": image}},
            "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": "web"}},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}}}


async def rolled_out(client: Client, ns: str, image: str) -> Obj | None:
    """The Deployment once its status says the rollout to `image` is complete and exactly REPLICAS pods of
    that image run, Ready, on the simulated nodes (old ones gone or terminating)."""
    d = await client.get(DEPLOY, "web", ns)
    status = d.get("status") or {}
    if not (image_of(d) == image and status.get("observedGeneration", 0) >= d["metadata"]["generation"]
            and status.get("updatedReplicas") == status.get("replicas") == status.get("availableReplicas")
            == status.get("readyReplicas") == REPLICAS):
        return None
    live = [p for p in await pods(client, ns, "app=web") if is_live(p)]
    if len(live) == REPLICAS and all(image_of(p) == image and running_on_node(p) for p in live):
        return d
    return None


@dataclass
class PodCounts:
    """Pods of a Deployment as a watch sees them, event by event: the most live ones, the fewest live and
    Ready (available: minReadySeconds is 0) after each event."""

    pods: dict[str, Obj] = field(default_factory=dict, repr=False)
    max_live: int = 0
    min_available: int | None = None
    events: int = 0

    def observe(self, kind: str, pod: Obj) -> None:
        name = pod["metadata"]["name"]
        if kind == "BOOKMARK":
            return
        if kind == "DELETED":
            self.pods.pop(name, None)
        else:
            self.pods[name] = pod
        self.events += 1
        live = [p for p in self.pods.values() if is_live(p)]
        available = sum(1 for p in live if is_ready(p))
        self.max_live = max(self.max_live, len(live))
        self.min_available = available if self.min_available is None else min(self.min_available, available)

    def settled_on(self, image: str) -> bool:
        live = [p for p in self.pods.values() if is_live(p)]
        return len(live) == REPLICAS and all(image_of(p) == image and is_ready(p) for p in live)


async def watch_pods(client: Client, ns: str, counts: PodCounts) -> None:
    listed = await client.list(PODS, ns, label_selector="app=web")
    for pod in listed["items"]:
        counts.pods[pod["metadata"]["name"]] = pod
    async for kind, pod in client.watch(PODS, ns, label_selector="app=web",
                                        resource_version=listed["metadata"]["resourceVersion"]):
        counts.observe(kind, pod)


async def test_deployment_rolling_update_and_undo(cluster: Cluster, client: Client) -> None:
    ns = await namespace(client)
    await client.create(DEPLOY, web_deployment(ns, "nginx:1"))
    first = await eventually(lambda: rolled_out(client, ns, "nginx:1"), what="6 Ready pods of nginx:1")
    assert first["metadata"]["annotations"][REVISION] == "1"
    placed = {p["spec"]["nodeName"] for p in await pods(client, ns, "app=web")}
    assert placed <= NODE_NAMES and len(placed) > 1, placed  # the scheduler spreads them

    counts = PodCounts()
    watcher = asyncio.create_task(watch_pods(client, ns, counts))
    try:
        # Rolling update with maxSurge=1, maxUnavailable=0: one new pod at a time, an old one goes only once
        # a new one is available.
        await client.patch(DEPLOY, "web", {"spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "nginx:2"}]}}}}, ns, patch_type="strategic")
        second = await eventually(lambda: rolled_out(client, ns, "nginx:2"), timeout=30,
                                  what="rollout to nginx:2")
        assert second["metadata"]["annotations"][REVISION] == "2"
        await eventually(lambda: _true(counts.settled_on("nginx:2")), what="the watch to see the rollout end")
        assert counts.min_available == REPLICAS, counts
        assert counts.max_live == REPLICAS + 1, counts  # the surge was used, never exceeded

        # `kubectl rollout undo`: the first ReplicaSet's template comes back, under the same limits.
        undo = await asyncio.to_thread(cluster.kubectl, "-n", ns, "rollout", "undo", "deploy/web")
        assert "deployment.apps/web rolled back" in undo.stdout
        third = await eventually(lambda: rolled_out(client, ns, "nginx:1"), timeout=30, what="undo to nginx:1")
        await eventually(lambda: _true(counts.settled_on("nginx:1")), what="the watch to see the undo end")
        assert counts.min_available == REPLICAS, counts
        assert counts.max_live == REPLICAS + 1, counts
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher

    assert third["spec"]["template"] == first["spec"]["template"]
    assert third["metadata"]["annotations"][REVISION] == "3"
    replica_sets = (await client.list(RS, ns))["items"]
    assert len(replica_sets) == 2  # the first ReplicaSet was scaled back up, not recreated
    by_image = {image_of(rs): rs for rs in replica_sets}
    assert by_image["nginx:1"]["spec"]["replicas"] == REPLICAS
    assert by_image["nginx:1"]["metadata"]["annotations"][REVISION] == "3"
    assert by_image["nginx:2"]["spec"]["replicas"] == 0


async def _true(value: bool) -> bool | None:
    return True if value else None


# --- Job ----------------------------------------------------------------------------------------------------


def job(name: str, annotations: dict[str, str], **spec: Any) -> Obj:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"metadata": {"annotations": annotations},
                                  "spec": {"restartPolicy": "Never",
                                           "containers": [{"name": "main", "image": "busybox"}]}}, **spec}}


async def finished(client: Client, ns: str, name: str, ctype: str) -> Obj | None:
    obj = await client.get(JOBS, name, ns)
    cond = condition(obj, ctype)
    return obj if cond is not None and cond["status"] == "True" else None


async def test_job_runs_to_completion_on_simulated_nodes(client: Client) -> None:
    ns = await namespace(client)
    await client.create(JOBS, job("batch", {RUN_SECONDS_ANNOTATION: "1"}, completions=3, parallelism=2), ns)
    done = await eventually(lambda: finished(client, ns, "batch", "Complete"), timeout=20, what="Job Complete")
    status = done["status"]
    assert status["succeeded"] == 3 and not status.get("failed") and not status.get("active")
    assert status.get("completionTime") and status.get("startTime")
    assert condition(done, "SuccessCriteriaMet") is not None
    job_pods = await pods(client, ns, "batch.kubernetes.io/job-name=batch")
    assert len(job_pods) == 3
    for pod in job_pods:
        assert pod["spec"]["nodeName"] in NODE_NAMES
        assert pod["status"]["phase"] == "Succeeded"
        assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
        assert TRACKING_FINALIZER not in (pod["metadata"].get("finalizers") or [])


async def test_job_with_failing_pods_exceeds_its_backoff_limit(client: Client) -> None:
    ns = await namespace(client)
    await client.create(JOBS, job("fails", {RUN_SECONDS_ANNOTATION: "0", EXIT_CODE_ANNOTATION: "3"},
                                  backoffLimit=1), ns)
    failed = await eventually(lambda: finished(client, ns, "fails", "Failed"), timeout=20, what="Job Failed")
    assert condition(failed, "Failed")["reason"] == "BackoffLimitExceeded"
    assert condition(failed, "FailureTarget")["reason"] == "BackoffLimitExceeded"
    assert condition(failed, "Complete") is None
    assert failed["status"]["failed"] == 2 and not failed["status"].get("succeeded")
    job_pods = await pods(client, ns, "batch.kubernetes.io/job-name=fails")
    assert len(job_pods) == 2  # the first and one retry: backoffLimit=1
    for pod in job_pods:
        assert pod["spec"]["nodeName"] in NODE_NAMES
        assert pod["status"]["phase"] == "Failed"
        assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3


# --- ReplicaSet ---------------------------------------------------------------------------------------------


async def healthy(client: Client, ns: str, count: int) -> list[Obj] | None:
    """The ReplicaSet's pods once exactly `count` exist, all Running and Ready on simulated nodes, and its
    status agrees."""
    rs = await client.get(RS, "heal", ns)
    status = rs.get("status") or {}
    if status.get("readyReplicas") != count or status.get("availableReplicas") != count:
        return None
    items = await pods(client, ns, "app=heal")
    return items if len(items) == count and all(running_on_node(p) for p in items) else None


async def gone(client: Client, ns: str, pod: Obj) -> bool:
    return all(p["metadata"]["uid"] != pod["metadata"]["uid"] for p in await pods(client, ns, "app=heal"))


async def test_replica_set_replaces_a_deleted_pod(client: Client) -> None:
    ns = await namespace(client)
    await client.create(RS, {
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "heal", "namespace": ns},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "heal"}},
                 "template": {"metadata": {"labels": {"app": "heal"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
    before = await eventually(lambda: healthy(client, ns, 3), what="3 Ready pods")
    victim = before[0]
    await client.delete(PODS, victim["metadata"]["name"], ns)

    # The simulated agent finishes the graceful deletion; the controller has made a replacement that the
    # scheduler placed and the agent runs.
    await eventually(lambda: gone(client, ns, victim), what="the deleted pod to go")
    after = await eventually(lambda: healthy(client, ns, 3), what="3 Ready pods again")
    uids = {p["metadata"]["uid"] for p in after}
    assert victim["metadata"]["uid"] not in uids
    assert len(uids - {p["metadata"]["uid"] for p in before}) == 1
    replacement = next(p for p in after if p["metadata"]["uid"] not in {q["metadata"]["uid"] for q in before})
    assert replacement["metadata"]["ownerReferences"][0]["name"] == "heal"
    assert replacement["spec"]["nodeName"] in NODE_NAMES
