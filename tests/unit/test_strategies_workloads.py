"""Deployment, ReplicaSet, StatefulSet, DaemonSet, ReplicationController, Job and CronJob strategies."""

from __future__ import annotations

import copy

import pytest

from pocketkube.api.errors import Cause, StatusError
from pocketkube.api.kinds import ResourceCatalog
from pocketkube.apiserver.strategies import StrategySet, build_strategies
from pocketkube.apiserver.strategies.batch import cron_schedule_error
from pocketkube.apiserver.strategy import Strategy


@pytest.fixture(scope="module")
def strategies() -> StrategySet:
    return build_strategies(ResourceCatalog())


def _texts(causes: list[Cause]) -> list[str]:
    return [f"{c.field}: {c.message}" for c in causes]


def _template(labels: dict | None = None, **spec) -> dict:
    pod_spec = {"containers": [{"name": "c", "image": "busybox:1.36"}]}
    pod_spec.update(spec)
    return {"metadata": {"labels": labels if labels is not None else {"app": "x"}}, "spec": pod_spec}


def _obj(kind: str, api: str, spec: dict) -> dict:
    return {"apiVersion": api, "kind": kind, "metadata": {"name": "x", "namespace": "default"}, "spec": spec}


def _prepare(strategy: Strategy, obj: dict) -> dict:
    strategy.default(obj)
    strategy.prepare_for_create(obj)
    return obj


def test_deployment_defaults(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("apps", "v1", "deployments"))
    d = _prepare(s, _obj("Deployment", "apps/v1", {"selector": {"matchLabels": {"app": "x"}},
                                                  "template": _template()}))
    spec = d["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "RollingUpdate",
                                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    assert spec["revisionHistoryLimit"] == 10
    assert spec["progressDeadlineSeconds"] == 600
    pod_spec = spec["template"]["spec"]
    assert pod_spec["restartPolicy"] == "Always"
    assert pod_spec["schedulerName"] == "default-scheduler"
    assert pod_spec["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    # Pod-only defaults and admission effects stay out of templates, as upstream.
    assert "enableServiceLinks" not in pod_spec and "serviceAccountName" not in pod_spec
    assert s.validate(d) == []
    assert s.tracks_generation


def test_deployment_selector_mismatch_and_errors(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("apps", "v1", "deployments"))
    d = _prepare(s, _obj("Deployment", "apps/v1", {
        "replicas": -1, "selector": {"matchLabels": {"app": "y"}}, "template": _template(restartPolicy="Never"),
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}}}))
    texts = _texts(s.validate(d))
    assert ('spec.template.metadata.labels: Invalid value: {"app":"x"}: `selector` does not match template '
            '`labels`') in texts
    assert "spec.replicas: Invalid value: -1: must be greater than or equal to 0" in texts
    assert 'spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"' in texts
    assert "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0" in texts


def test_deployment_selector_required_and_immutable(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("apps", "v1", "deployments"))
    d = _prepare(s, _obj("Deployment", "apps/v1", {"template": _template()}))
    assert "spec.selector: Required value" in _texts(s.validate(d))
    old = _prepare(s, _obj("Deployment", "apps/v1", {"selector": {"matchLabels": {"app": "x"}},
                                                    "template": _template({"app": "x", "v": "1"})}))
    new = copy.deepcopy(old)
    new["spec"]["selector"] = {"matchLabels": {"app": "x", "v": "1"}}
    assert ('spec.selector: Invalid value: {"matchLabels":{"app":"x","v":"1"}}: field is immutable'
            in _texts(s.validate_update(new, old)))


def test_statefulset_and_daemonset_defaults(strategies: StrategySet) -> None:
    sts_s = strategies.strategy_for(("apps", "v1", "statefulsets"))
    sts = _prepare(sts_s, _obj("StatefulSet", "apps/v1", {"selector": {"matchLabels": {"app": "x"}},
                                                         "serviceName": "x", "template": _template()}))
    spec = sts["spec"]
    assert spec["podManagementPolicy"] == "OrderedReady"
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    assert spec["replicas"] == 1 and spec["revisionHistoryLimit"] == 10
    assert sts_s.validate(sts) == []
    changed = copy.deepcopy(sts)
    changed["spec"]["serviceName"] = "other"
    assert any(t.startswith("spec: Forbidden: updates to statefulset spec for fields other than 'replicas'")
               for t in _texts(sts_s.validate_update(changed, sts)))
    ds_s = strategies.strategy_for(("apps", "v1", "daemonsets"))
    ds = _prepare(ds_s, _obj("DaemonSet", "apps/v1", {"selector": {"matchLabels": {"app": "x"}},
                                                     "template": _template()}))
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate",
                                            "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
    assert ds["spec"]["revisionHistoryLimit"] == 10
    assert ds_s.validate(ds) == []


def test_statefulset_template_mounts_its_claim_templates(strategies: StrategySet) -> None:
    """As upstream, a StatefulSet's pod spec is not validated: its containers mount volumes that only its
    volumeClaimTemplates name. Its restart policy still must be Always."""
    sts_s = strategies.strategy_for(("apps", "v1", "statefulsets"))
    template = _template()
    template["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    deployment_template = copy.deepcopy(template)
    sts = _prepare(sts_s, _obj("StatefulSet", "apps/v1", {
        "selector": {"matchLabels": {"app": "x"}}, "serviceName": "x", "template": template,
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}))
    assert sts_s.validate(sts) == []
    for policy in ("Never", "Sometimes"):
        sts["spec"]["template"]["spec"]["restartPolicy"] = policy
        assert _texts(sts_s.validate(sts)) == [
            f'spec.template.spec.restartPolicy: Unsupported value: "{policy}": supported values: "Always"']
    deployment_s = strategies.strategy_for(("apps", "v1", "deployments"))
    deployment = _prepare(deployment_s, _obj("Deployment", "apps/v1", {"selector": {"matchLabels": {"app": "x"}},
                                                                     "template": deployment_template}))
    assert _texts(deployment_s.validate(deployment)) == [
        'spec.template.spec.containers[0].volumeMounts[0].name: Not found: "data"']


def test_replicaset_and_rc(strategies: StrategySet) -> None:
    rs_s = strategies.strategy_for(("apps", "v1", "replicasets"))
    rs = _prepare(rs_s, _obj("ReplicaSet", "apps/v1", {"selector": {"matchLabels": {"app": "x"}},
                                                      "template": _template()}))
    assert rs["spec"]["replicas"] == 1 and rs_s.validate(rs) == []
    assert rs_s.field_getters()["status.replicas"]({"status": {"replicas": 3}}) == "3"
    rc_s = strategies.strategy_for(("", "v1", "replicationcontrollers"))
    rc = _prepare(rc_s, {"apiVersion": "v1", "kind": "ReplicationController",
                         "metadata": {"name": "rc", "namespace": "default"}, "spec": {"template": _template()}})
    assert rc["spec"]["selector"] == {"app": "x"}
    assert rc["metadata"]["labels"] == {"app": "x"}
    assert rc["spec"]["replicas"] == 1
    assert rc_s.validate(rc) == []


async def test_job_defaults_and_generated_selector(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("batch", "v1", "jobs"))
    job = _prepare(s, _obj("Job", "batch/v1", {"template": _template({}, restartPolicy="Never")}))
    spec = job["spec"]
    assert (spec["completions"], spec["parallelism"], spec["backoffLimit"]) == (1, 1, 6)
    assert spec["completionMode"] == "NonIndexed"
    assert spec["suspend"] is False
    assert spec["podReplacementPolicy"] == "TerminatingOrFailed"
    assert "manualSelector" not in spec
    assert s.validate(job) == []
    job["metadata"]["uid"] = "1234-abcd"
    await s.before_create(job)
    assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": "1234-abcd"}}
    assert spec["template"]["metadata"]["labels"] == {
        "job-name": "x", "batch.kubernetes.io/job-name": "x",
        "controller-uid": "1234-abcd", "batch.kubernetes.io/controller-uid": "1234-abcd"}


def test_job_parallelism_only(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("batch", "v1", "jobs"))
    job = _prepare(s, _obj("Job", "batch/v1", {"parallelism": 3, "template": _template(restartPolicy="Never")}))
    assert "completions" not in job["spec"] and job["spec"]["parallelism"] == 3


async def test_job_conflicting_uid_label(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("batch", "v1", "jobs"))
    job = _prepare(s, _obj("Job", "batch/v1", {"template": _template(
        {"batch.kubernetes.io/controller-uid": "wrong"}, restartPolicy="Never")}))
    job["metadata"]["uid"] = "u1"
    with pytest.raises(StatusError) as err:
        await s.before_create(job)
    assert err.value.code == 422
    assert ("spec.template.metadata.labels[batch.kubernetes.io/controller-uid]: Invalid value: \"wrong\": "
            "must be 'u1'") in err.value.message


def test_job_restart_policy_and_immutability(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("batch", "v1", "jobs"))
    job = _prepare(s, _obj("Job", "batch/v1", {"template": _template()}))
    assert ('spec.template.spec.restartPolicy: Unsupported value: "Always": supported values: "OnFailure", '
            '"Never"') in _texts(s.validate(job))
    old = _prepare(s, _obj("Job", "batch/v1", {"selector": {"matchLabels": {"app": "x"}}, "manualSelector": True,
                                              "template": _template(restartPolicy="Never")}))
    new = copy.deepcopy(old)
    new["spec"]["selector"] = {"matchLabels": {"app": "y"}}
    new["spec"]["template"]["metadata"]["labels"] = {"app": "y"}
    texts = _texts(s.validate_update(new, old))
    assert 'spec.selector: Invalid value: {"matchLabels":{"app":"y"}}: field is immutable' in texts
    assert any(t.startswith("spec.template: Invalid value: ") and t.endswith("field is immutable") for t in texts)


def test_cronjob(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("batch", "v1", "cronjobs"))
    cj = _prepare(s, _obj("CronJob", "batch/v1", {"schedule": "*/5 * * * *", "jobTemplate": {
        "spec": {"template": _template(restartPolicy="OnFailure")}}}))
    spec = cj["spec"]
    assert spec["concurrencyPolicy"] == "Allow" and spec["suspend"] is False
    assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (3, 1)
    assert spec["jobTemplate"]["spec"]["backoffLimit"] == 6
    assert s.validate(cj) == []
    bad = copy.deepcopy(cj)
    bad["spec"]["schedule"] = "every minute"
    bad["spec"]["timeZone"] = "Mars/Olympus"
    texts = _texts(s.validate(bad))
    assert ('spec.schedule: Invalid value: "every minute": expected exactly 5 fields, found 2: [every minute]'
            in texts)
    assert 'spec.timeZone: Invalid value: "Mars/Olympus": unknown time zone Mars/Olympus' in texts
    bad["spec"]["schedule"] = ""
    assert "spec.schedule: Required value" in _texts(s.validate(bad))


@pytest.mark.parametrize(("schedule", "error"), [
    ("0 0 * * *", None), ("@hourly", None), ("*/15 9-17 * * mon-fri", None), ("0 0 1 jan,jul *", None),
    ("0 0 * * 7", "end of range (7) above maximum (6): 7"), ("@every 5m", None),
    ("60 * * * *", "end of range (60) above maximum (59): 60"),
    ("* * 0 * *", "beginning of range (0) below minimum (1): 0"),
    ("5-1 * * * *", "beginning of range (5) beyond end of range (1): 5-1"),
    ("@fortnightly", "unrecognized descriptor: @fortnightly"),
])
def test_cron_parser(schedule: str, error: str | None) -> None:
    assert cron_schedule_error(schedule) == error
