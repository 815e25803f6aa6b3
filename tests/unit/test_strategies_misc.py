"""Namespaces, ConfigMaps, Secrets, Events, RBAC, HPA, StorageClass, NetworkPolicy, PriorityClass, catalogue."""

from __future__ import annotations

import base64
import copy

import pytest

from pocketkube.api.errors import Cause
from pocketkube.api.kinds import ResourceCatalog, ResourceInfo
from pocketkube.apiserver.strategies import StrategySet, build_strategies
from pocketkube.apiserver.strategy import Strategy


@pytest.fixture(scope="module")
def strategies() -> StrategySet:
    return build_strategies(ResourceCatalog())


def _texts(causes: list[Cause]) -> list[str]:
    return [f"{c.field}: {c.message}" for c in causes]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _prepare(strategy: Strategy, obj: dict) -> dict:
    strategy.default(obj)
    strategy.prepare_for_create(obj)
    return obj


def test_every_builtin_has_a_specific_strategy(strategies: StrategySet) -> None:
    for info in strategies.catalog.all():
        # never stored: the reviews (create only, apiserver/reviews.py) and v1 ComponentStatus (get and list
        # only, apiserver/componentstatus.py)
        if info.verbs in (("create",), ("get", "list")):
            continue
        strategy = strategies.strategy_for(info)
        assert type(strategy) is not Strategy, info.plural
        assert strategy.info == info
        assert strategy.name_validator in ("dns1123subdomain", "dns1123label", "dns1035label",
                                                       "path segment", "any")


def test_unknown_resource_gets_base_strategy(strategies: StrategySet) -> None:
    crd = ResourceInfo("example.com", "v1", "Widget", "widgets", True)
    assert type(strategies.strategy_for(crd)) is Strategy


def test_namespace(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("", "v1", "namespaces"))
    ns = _prepare(s, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"},
                      "status": {"phase": "Terminating"}})
    assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": "team-a"}
    assert ns["spec"] == {"finalizers": ["kubernetes"]}
    assert ns["status"] == {"phase": "Active"}
    assert s.name_validator == "dns1123label"
    assert s.field_getters()["status.phase"](ns) == "Active"
    # The label is enforced on update; finalizers only change through /finalize.
    new = copy.deepcopy(ns)
    new["metadata"]["labels"] = {"kubernetes.io/metadata.name": "other"}
    new["spec"]["finalizers"] = []
    s.default(new)
    s.prepare_for_update(new, ns)
    assert new["metadata"]["labels"]["kubernetes.io/metadata.name"] == "team-a"
    assert new["spec"]["finalizers"] == ["kubernetes"]
    assert s.deletion_blocked(ns)
    s.prepare_for_delete(ns)
    assert ns["status"]["phase"] == "Terminating"
    finalized = copy.deepcopy(ns)
    finalized["spec"]["finalizers"] = []
    assert not s.deletion_blocked(finalized)


def test_configmap(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("", "v1", "configmaps"))
    cm = {"metadata": {"name": "c", "namespace": "default"}, "data": {"good.key": "1", "bad key": "2"}}
    assert ("data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric "
            "characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for "
            "validation is '[-._a-zA-Z0-9]+')") in _texts(s.validate(cm))
    big = {"metadata": {"name": "c"}, "data": {"a": "x" * (1024 * 1024 + 1)}}
    assert ": Too long: may not be more than 1048576 bytes" in _texts(s.validate(big))
    old = {"metadata": {"name": "c"}, "data": {"a": "1"}, "immutable": True}
    new = {"metadata": {"name": "c"}, "data": {"a": "2"}, "immutable": True}
    assert "data: Forbidden: field is immutable when `immutable` is set" in _texts(s.validate_update(new, old))
    assert s.validate_update(copy.deepcopy(old), old) == []


def test_secret(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("", "v1", "secrets"))
    sec = _prepare(s, {"metadata": {"name": "s", "namespace": "default"}, "stringData": {"user": "admin"}})
    assert sec["type"] == "Opaque"
    assert sec["data"] == {"user": _b64("admin")} and "stringData" not in sec
    assert s.validate(sec) == []
    tls = _prepare(s, {"metadata": {"name": "t"}, "type": "kubernetes.io/tls", "data": {"tls.crt": _b64("x")}})
    assert _texts(s.validate(tls)) == ["data[tls.key]: Required value"]
    docker = _prepare(s, {"metadata": {"name": "d"}, "type": "kubernetes.io/dockerconfigjson", "data": {}})
    assert _texts(s.validate(docker)) == ["data[.dockerconfigjson]: Required value"]
    docker["data"][".dockerconfigjson"] = _b64('{"auths": {}}')
    assert s.validate(docker) == []
    changed = copy.deepcopy(sec)
    changed["type"] = "kubernetes.io/basic-auth"
    assert ('type: Invalid value: "kubernetes.io/basic-auth": field is immutable'
            in _texts(s.validate_update(changed, sec)))
    assert s.field_getters()["type"](sec) == "Opaque"


def test_core_event_rules(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("", "v1", "events"))
    assert s.allow_create_on_update
    ev = {"metadata": {"name": "p.1", "namespace": "default"}, "involvedObject": {"kind": "Pod", "name": "p",
                                                                                  "namespace": "other"}}
    assert ('involvedObject.namespace: Invalid value: "other": does not match event.namespace'
            in _texts(s.validate(ev)))
    ev["involvedObject"]["namespace"] = "default"
    assert s.validate(ev) == []
    assert s.field_getters()["involvedObject.kind"](ev) == "Pod"
    new_api = strategies.strategy_for(("events.k8s.io", "v1", "events"))
    bad = {"metadata": {"name": "e", "namespace": "default"}, "regarding": {"namespace": "default"}}
    texts = _texts(new_api.validate(bad))
    assert "eventTime: Required value" in texts
    assert 'type: Invalid value: "": has invalid value: ' in texts
    good = {"metadata": {"name": "e", "namespace": "default"}, "regarding": {"namespace": "default"},
            "eventTime": "2025-01-01T00:00:00.000000Z", "reportingController": "example.com/ctl",
            "reportingInstance": "i", "action": "Act", "reason": "Why", "type": "Normal"}
    assert new_api.validate(good) == []
    assert new_api.field_getters()["involvedObject.namespace"](good) == "default"


def test_rbac(strategies: StrategySet) -> None:
    rb_s = strategies.strategy_for(("rbac.authorization.k8s.io", "v1", "rolebindings"))
    rb = _prepare(rb_s, {"metadata": {"name": "rb", "namespace": "default"},
                         "roleRef": {"kind": "Role", "name": "r"},
                         "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "sa"}]})
    assert rb["roleRef"]["apiGroup"] == "rbac.authorization.k8s.io"
    assert rb["subjects"][0]["apiGroup"] == "rbac.authorization.k8s.io"
    assert "apiGroup" not in rb["subjects"][1]  # "" for a ServiceAccount, which omitempty leaves out
    assert rb_s.validate(rb) == [] and rb_s.allow_create_on_update
    assert rb_s.name_validator == "path segment"
    new = copy.deepcopy(rb)
    new["roleRef"]["name"] = "other"
    assert any(t.startswith("roleRef: Invalid value: ") and t.endswith("cannot change roleRef")
               for t in _texts(rb_s.validate_update(new, rb)))
    crb_s = strategies.strategy_for(("rbac.authorization.k8s.io", "v1", "clusterrolebindings"))
    crb = _prepare(crb_s, {"metadata": {"name": "c"}, "roleRef": {"kind": "Role", "name": "r"},
                           "subjects": [{"kind": "ServiceAccount", "name": "sa"}]})
    texts = _texts(crb_s.validate(crb))
    assert 'roleRef.kind: Unsupported value: "Role": supported values: "ClusterRole"' in texts
    assert "subjects[0].namespace: Required value" in texts
    role_s = strategies.strategy_for(("rbac.authorization.k8s.io", "v1", "roles"))
    role = {"metadata": {"name": "r", "namespace": "default"}, "rules": [{"resources": ["pods"]}]}
    texts = _texts(role_s.validate(role))
    assert "rules[0].verbs: Required value: verbs must contain at least one value" in texts
    assert "rules[0].apiGroups: Required value: resource rules must supply at least one api group" in texts


def test_hpa_storageclass_netpol_priorityclass(strategies: StrategySet) -> None:
    hpa_s = strategies.strategy_for(("autoscaling", "v2", "horizontalpodautoscalers"))
    hpa = _prepare(hpa_s, {"metadata": {"name": "h", "namespace": "default"}, "spec": {
        "scaleTargetRef": {"kind": "Deployment", "name": "d"}, "maxReplicas": 3, "behavior": {}}})
    spec = hpa["spec"]
    assert spec["minReplicas"] == 1
    assert spec["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 80}
    assert spec["behavior"]["scaleUp"] == {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}]}
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert hpa_s.validate(hpa) == []
    sc_s = strategies.strategy_for(("storage.k8s.io", "v1", "storageclasses"))
    sc = _prepare(sc_s, {"metadata": {"name": "local"}, "provisioner": "rancher.io/local-path"})
    assert (sc["reclaimPolicy"], sc["volumeBindingMode"]) == ("Delete", "Immediate")
    changed = copy.deepcopy(sc)
    changed["provisioner"] = "other.io/x"
    assert "provisioner: Forbidden: updates to provisioner are forbidden." in _texts(sc_s.validate_update(changed, sc))
    np_s = strategies.strategy_for(("networking.k8s.io", "v1", "networkpolicies"))
    np = _prepare(np_s, {"metadata": {"name": "n", "namespace": "default"}, "spec": {
        "podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}})
    assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert np["spec"]["egress"][0]["ports"][0]["protocol"] == "TCP"
    assert np_s.validate(np) == []
    pc_s = strategies.strategy_for(("scheduling.k8s.io", "v1", "priorityclasses"))
    pc = _prepare(pc_s, {"metadata": {"name": "high"}, "value": 1000})
    assert pc["preemptionPolicy"] == "PreemptLowerPriority"
    bumped = copy.deepcopy(pc)
    bumped["value"] = 5
    assert "value: Forbidden: may not be changed in an update." in _texts(pc_s.validate_update(bumped, pc))


def test_pv_pvc_defaults(strategies: StrategySet) -> None:
    pv_s = strategies.strategy_for(("", "v1", "persistentvolumes"))
    pv = _prepare(pv_s, {"metadata": {"name": "pv"}, "spec": {"capacity": {"storage": "1Gi"},
                                                              "accessModes": ["ReadWriteOnce"]}})
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert pv["spec"]["volumeMode"] == "Filesystem"
    assert pv["status"]["phase"] == "Pending"
    pvc_s = strategies.strategy_for(("", "v1", "persistentvolumeclaims"))
    pvc = _prepare(pvc_s, {"metadata": {"name": "c", "namespace": "default"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    assert pvc["spec"]["volumeMode"] == "Filesystem"
    assert pvc["status"] == {"phase": "Pending"}
    assert pvc_s.validate(pvc) == []
