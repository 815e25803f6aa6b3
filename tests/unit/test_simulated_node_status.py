"""Units of the node agent side: join tokens, flag parsing, the simulated pod timeline, and the node
lifecycle controller's taint and toleration rules."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from pocketkube.api.scheduling import tolerates
from pocketkube.apiserver.authn import Authenticator
from pocketkube.apiserver.nodetoken import TokenError, ca_hash, ensure_node_token, parse_token
from pocketkube.apiserver.pki import ensure_pki
from pocketkube.controllers.nodelifecycle import (
    desired_taints,
    matching_tolerations,
    min_toleration_seconds,
)
from pocketkube.kubelet.simulated import (
    EXIT_CODE_ANNOTATION,
    RUN_SECONDS_ANNOTATION,
    SimulatedNodes,
    SimulationConfig,
    desired_pod_status,
    go_duration,
    normalize_image,
    parse_labels,
    parse_taints,
    rfc3339,
)

T0 = 1_800_000_000.0  # a whole second


# --- join token ------------------------------------------------------------------------------


def test_node_token_created_once_and_authenticates(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path, sans=[], hostname="h")
    token = ensure_node_token(tmp_path, pki.ca_cert)
    text = (tmp_path / "node-token").read_text().strip()
    assert text == f"K10{ca_hash(pki.ca_cert.read_bytes())}::server:{token.secret}"
    assert (tmp_path / "node-token").stat().st_mode & 0o777 == 0o600
    assert ensure_node_token(tmp_path, pki.ca_cert) == token  # reused on the next start
    authn = Authenticator(pki.ca_cert, pki.token_file, token)
    for presented in (token.secret, text):
        user = authn.authenticate(None, f"Bearer {presented}")
        assert user is not None and user.name == "system:node-bootstrap"
        assert user.groups == ("system:bootstrappers", "system:nodes", "system:authenticated")
    assert authn.authenticate(None, f"Bearer {token.secret[:-1]}") is None


def test_parse_token_forms() -> None:
    digest = "ab" * 32
    full = parse_token(f"K10{digest}::server:s3cret")
    assert (full.ca_hash, full.username, full.secret) == (digest, "server", "s3cret")
    assert parse_token("plain").ca_hash == "" and parse_token("plain").secret == "plain"
    for bad in ("", f"K10{digest}::server", "K10xyz::server:s"):
        with pytest.raises(TokenError):
            parse_token(bad)
    with pytest.raises(TokenError):
        full.verify_ca(b"another CA")
    parse_token("plain").verify_ca(b"anything")  # nothing to check it against


# --- flags -----------------------------------------------------------------------------------


def test_labels_and_taints_flags() -> None:
    assert parse_labels("a=1, b=,c=x=y") == {"a": "1", "b": "", "c": "x=y"}
    assert parse_taints("k=v:NoSchedule,gpu:NoExecute") == [
        {"key": "k", "value": "v", "effect": "NoSchedule"}, {"key": "gpu", "effect": "NoExecute"}]
    for bad in ("k=v", "k=v:Sometimes", "=v:NoSchedule"):
        with pytest.raises(ValueError):
            parse_taints(bad)
    with pytest.raises(ValueError):
        parse_labels("novalue")


def test_image_names_and_durations() -> None:
    assert normalize_image("busybox") == "docker.io/library/busybox:latest"
    assert normalize_image("user/app:1") == "docker.io/user/app:1"
    assert normalize_image("registry.k8s.io/pause:3.10") == "registry.k8s.io/pause:3.10"
    assert normalize_image("localhost:5000/x") == "localhost:5000/x:latest"
    assert [go_duration(s) for s in (10, 80, 300, 3700)] == ["10s", "1m20s", "5m0s", "1h1m40s"]


# --- the pod timeline ------------------------------------------------------------------------


def pod(annotations: dict[str, str] | None = None, policy: str = "Always", status: dict | None = None) -> dict:
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u1", "generation": 1,
                         "annotations": annotations or {}},
            "spec": {"restartPolicy": policy, "containers": [{"name": "app", "image": "busybox"}]},
            "status": status or {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": rfc3339(T0)}]}}


def step(p: dict, now: float, config: SimulationConfig | None = None) -> tuple[dict, float | None]:
    status, wake = desired_pod_status(p, now, "198.18.0.1", "10.42.0.2", config or SimulationConfig())
    p["status"] = {**p["status"], **status}
    return p, wake


def cond(p: dict, ctype: str) -> dict:
    return next(c for c in p["status"]["conditions"] if c["type"] == ctype)


def test_new_pod_runs_and_readiness_waits_for_the_delay() -> None:
    p, wake = step(pod(), T0, SimulationConfig(pod_ready_delay=2))
    assert p["status"]["phase"] == "Running" and wake == T0 + 2
    assert cond(p, "Ready")["status"] == "False" and cond(p, "Ready")["reason"] == "ContainersNotReady"
    assert cond(p, "PodScheduled")["status"] == "True"  # the scheduler's condition is kept
    p, wake = step(p, T0 + 2, SimulationConfig(pod_ready_delay=2))
    assert cond(p, "Ready")["status"] == "True" and wake is None
    assert p["status"]["containerStatuses"][0]["ready"] is True
    assert cond(p, "Initialized")["lastTransitionTime"] == rfc3339(T0)  # unchanged conditions keep their time


def test_exit_codes_decide_phase_with_restart_policy_never() -> None:
    p, wake = step(pod({RUN_SECONDS_ANNOTATION: "3", EXIT_CODE_ANNOTATION: "2"}, "Never"), T0)
    assert wake == T0 + 3
    p, _ = step(p, T0 + 10)
    term = p["status"]["containerStatuses"][0]["state"]["terminated"]
    assert p["status"]["phase"] == "Failed" and term["exitCode"] == 2 and term["reason"] == "Error"
    assert term["finishedAt"] == rfc3339(T0 + 3)  # exited when the timeline says, not when we looked
    assert cond(p, "Ready")["reason"] == "PodFailed"


def test_restarts_back_off_like_the_kubelet() -> None:
    config = SimulationConfig(restart_backoff=10)
    p, _ = step(pod({RUN_SECONDS_ANNOTATION: "5"}), T0, config)
    # t=5 exit, immediate restart (1); t=10 exit → back-off 10 s; t=20 restart (2); t=25 exit → back-off 20 s.
    p, wake = step(p, T0 + 12, config)
    cs = p["status"]["containerStatuses"][0]
    assert cs["restartCount"] == 1 and cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert cs["state"]["waiting"]["message"] == "back-off 10s restarting failed container=app pod=p_ns(u1)"
    assert wake == T0 + 20 and p["status"]["phase"] == "Running"
    p, wake = step(p, T0 + 26, config)
    cs = p["status"]["containerStatuses"][0]
    assert cs["restartCount"] == 2 and "back-off 20s" in cs["state"]["waiting"]["message"]
    assert cs["lastState"]["terminated"]["startedAt"] == rfc3339(T0 + 20)


def test_stopping_terminates_containers() -> None:
    p, _ = step(pod(), T0)
    status, wake = desired_pod_status(p, T0 + 5, "198.18.0.1", "10.42.0.2", SimulationConfig(), stopping=True)
    assert wake is None and status["phase"] == "Succeeded"
    assert status["containerStatuses"][0]["state"]["terminated"]["finishedAt"] == rfc3339(T0 + 5)


# --- node lifecycle rules --------------------------------------------------------------------


def node(ready: str, *, unschedulable: bool = False, taints: list[dict] | None = None) -> dict:
    return {"metadata": {"name": "n"}, "spec": {"unschedulable": unschedulable, "taints": taints or []},
            "status": {"conditions": [{"type": "Ready", "status": ready},
                                      {"type": "DiskPressure", "status": "True"}]}}


def test_desired_taints_follow_conditions() -> None:
    keys = {(t["key"], t["effect"]) for t in desired_taints(node("Unknown", unschedulable=True), "T")}
    assert keys == {("node.kubernetes.io/unreachable", "NoExecute"), ("node.kubernetes.io/unreachable", "NoSchedule"),
                    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
                    ("node.kubernetes.io/unschedulable", "NoSchedule")}
    kept = {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute", "timeAdded": "EARLIER"}
    mine = {"key": "team", "value": "a", "effect": "NoExecute"}
    taints = desired_taints(node("False", taints=[kept, mine,
                                                  {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]),
                            "NOW")
    assert kept in taints and mine in taints  # existing timeAdded kept; foreign taints untouched
    assert all(t["key"] != "node.kubernetes.io/unreachable" for t in taints)
    assert desired_taints(node("True", taints=[kept, mine]), "NOW") == [
        mine, {"key": "node.kubernetes.io/disk-pressure", "effect": "NoSchedule"}]


def test_toleration_matching_and_min_time() -> None:
    unreachable = {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}
    assert tolerates({"operator": "Exists"}, unreachable)
    assert tolerates({"key": unreachable["key"], "operator": "Exists", "effect": "NoExecute"}, unreachable)
    assert not tolerates({"key": unreachable["key"], "operator": "Exists", "effect": "NoSchedule"}, unreachable)
    assert tolerates({"key": "k", "value": "v"}, {"key": "k", "value": "v", "effect": "NoExecute"})
    assert not tolerates({"key": "k", "value": "w"}, {"key": "k", "value": "v", "effect": "NoExecute"})
    ok, used = matching_tolerations([unreachable], [{"key": "other", "operator": "Exists"},
                                                    {"operator": "Exists", "tolerationSeconds": 7}])
    assert ok and min_toleration_seconds(used) == 7
    assert matching_tolerations([unreachable], [{"key": "x", "operator": "Exists"}]) == (False, [])
    assert min_toleration_seconds([{"operator": "Exists"}]) == -1  # forever
    assert min_toleration_seconds([{"tolerationSeconds": 30}, {"tolerationSeconds": -5}]) == 0


# --- timed pod syncs --------------------------------------------------------------------------
def test_a_wake_that_fires_early_by_the_wall_clock_does_not_swallow_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    """The queue's timers run on the monotonic clock; by the wall clock they may fire a hair early. The sync they
    start must still count as theirs, or its own "not due yet, look again" is taken for a duplicate."""
    async def scenario() -> None:
        sim = SimulatedNodes(client=None, count=0)  # type: ignore[arg-type]  # no request is made
        key = "ns/deleted-pod"
        monkeypatch.setattr(time, "time", lambda: T0)
        sim._look_again(key, T0 + 1.0)  # the deletion is due at T0 + 1
        assert len(sim._pod_queue._waiting) == 1
        sim._clear_due_wake(key, T0 + 0.999)  # the timer fired 1 ms early
        monkeypatch.setattr(time, "time", lambda: T0 + 0.999)
        sim._look_again(key, T0 + 1.0)  # not due yet: another timer, not a swallowed one
        assert len(sim._pod_queue._waiting) == 2
        sim._clear_due_wake(key, T0 + 0.5)  # an event's sync well before the wake keeps it
        sim._look_again(key, T0 + 1.0)
        assert len(sim._pod_queue._waiting) == 2
        sim._pod_queue.shutdown()

    asyncio.run(scenario())
