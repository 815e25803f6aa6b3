"""ResourceQuota (plugin/pkg/admission/resourcequota and pkg/quota/v1/evaluator/core).

A write that would take a namespace's usage past a ResourceQuota's hard limits is refused with 403
`exceeded quota: …`; an admitted one is charged to the quota's status.used before it is stored (as
upstream, so concurrent writes cannot both take the last unit). Upstream's quota controller then keeps
status current; this server has none, so the plugin also does its part: it fills a new quota's status,
refunds a write that failed after being charged, and releases usage when objects are deleted or pods
finish. Scopes: Terminating, NotTerminating, BestEffort, NotBestEffort, PriorityClass,
CrossNamespacePodAffinity.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from pocketkube.api.errors import StatusError
from pocketkube.api.kinds import ResourceInfo
from pocketkube.api.quantity import Quantity
from pocketkube.apiserver.strategies.core_pods import qos_class

from .interfaces import CREATE, DELETE, UPDATE, AdmissionAttributes, Handler, forbidden
from .resources import ResourceList, add, pod_limits, pod_requests, resource_list
from .state import ClusterState

log = logging.getLogger(__name__)
Obj = dict[str, Any]

ONE = Quantity.from_int(1)
# Object counts with names older than count/<resource>.
_LEGACY_COUNTS = {("", "configmaps"): "configmaps", ("", "secrets"): "secrets",
                  ("", "replicationcontrollers"): "replicationcontrollers", ("", "resourcequotas"): "resourcequotas",
                  ("", "services"): "services", ("", "persistentvolumeclaims"): "persistentvolumeclaims"}
_COMPUTE = ("cpu", "memory", "ephemeral-storage")
# What a container must request or limit when a quota restricts it (podEvaluator.Constraints).
_MUST_SPECIFY = frozenset({"requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "cpu", "memory"})
_STORAGE_CLASS_SUFFIX = ".storageclass.storage.k8s.io/"
_CHARGE_ATTEMPTS = 5


def _count_name(info: ResourceInfo) -> str:
    return f"count/{info.plural}.{info.group}" if info.group else f"count/{info.plural}"


def _pod_counts(pod: Obj, honour_grace: bool) -> bool:
    """QuotaV1Pod: finished pods, and pods past their deletion grace, use no compute resources."""
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return False
    if not honour_grace:
        return True
    meta = pod.get("metadata") or {}
    stamp, grace = meta.get("deletionTimestamp"), meta.get("deletionGracePeriodSeconds")
    if stamp and grace is not None:
        try:
            deleted = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            return True
        return datetime.now(UTC) <= deleted + timedelta(seconds=int(grace))
    return True


def _compute_usage(requests: ResourceList, limits: ResourceList) -> ResourceList:
    """podComputeUsageHelper (pods=1 included)."""
    usage: ResourceList = {"pods": ONE}
    for name in _COMPUTE:
        if name in requests:
            usage[name] = usage[f"requests.{name}"] = requests[name]
        if name in limits:
            usage[f"limits.{name}"] = limits[name]
    for name, q in requests.items():
        if name.startswith("hugepages-"):
            usage[name] = usage[f"requests.{name}"] = q
        elif "/" in name and not name.startswith("kubernetes.io/") and "requests." not in name:
            usage[f"requests.{name}"] = q  # extended resources are quota'd as requests.<name> only
    return usage


def usage(info: ResourceInfo, obj: Obj, honour_grace: bool = True) -> ResourceList:
    """What one object consumes, in quota resource names. Without `honour_grace`, a pod past its deletion
    grace still counts: what it was charged is what its deletion releases."""
    result: ResourceList = {_count_name(info): ONE}
    legacy = _LEGACY_COUNTS.get((info.group, info.plural))
    if legacy:
        result[legacy] = ONE
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    if info.group == "" and info.plural == "pods" and _pod_counts(obj, honour_grace):
        result.update(_compute_usage(pod_requests(spec), pod_limits(spec)))
    elif info.group == "" and info.plural == "services":
        service_type = spec.get("type") or "ClusterIP"
        ports = len(spec.get("ports") or [])
        if service_type == "LoadBalancer":
            result["services.loadbalancers"] = ONE
            if spec.get("allocateLoadBalancerNodePorts", True):
                result["services.nodeports"] = Quantity.from_int(ports)
        elif service_type == "NodePort":
            result["services.nodeports"] = Quantity.from_int(ports)
    elif info.group == "" and info.plural == "persistentvolumeclaims":
        storage = resource_list((spec.get("resources") or {}).get("requests")).get("storage")
        if storage is not None:
            result["requests.storage"] = storage
        storage_class = spec.get("storageClassName")
        if storage_class:
            result[f"{storage_class}{_STORAGE_CLASS_SUFFIX}persistentvolumeclaims"] = ONE
            if storage is not None:
                result[f"{storage_class}{_STORAGE_CLASS_SUFFIX}requests.storage"] = storage
    return result


def _resource_of(name: str) -> tuple[str, str] | None:
    """The (group, plural) whose objects a quota resource name counts."""
    if name.startswith("count/"):
        plural, _, group = name[len("count/"):].partition(".")
        return group, plural
    for key, legacy in _LEGACY_COUNTS.items():
        if legacy == name:
            return key
    if name.startswith("services."):
        return "", "services"
    if name == "requests.storage" or _STORAGE_CLASS_SUFFIX in name:
        return "", "persistentvolumeclaims"
    if name == "pods" or name.startswith(("requests.", "limits.", "hugepages-")) or name in _COMPUTE:
        return "", "pods"
    return None


def _scope_matches(scope: str, operator: str, values: list[str], pod: Obj) -> bool:
    spec = pod.get("spec") or {}
    if scope == "Terminating":
        return spec.get("activeDeadlineSeconds") is not None
    if scope == "NotTerminating":
        return spec.get("activeDeadlineSeconds") is None
    if scope == "BestEffort":
        return qos_class(spec) == "BestEffort"
    if scope == "NotBestEffort":
        return qos_class(spec) != "BestEffort"
    if scope == "PriorityClass":
        name = spec.get("priorityClassName") or ""
        if operator == "In":
            return name in values
        if operator == "NotIn":
            return name not in values
        if operator == "Exists":
            return bool(name)
        return not name  # DoesNotExist
    if scope == "CrossNamespacePodAffinity":
        affinity = spec.get("affinity") or {}
        for kind in ("podAffinity", "podAntiAffinity"):
            rules = affinity.get(kind) or {}
            terms = list(rules.get("requiredDuringSchedulingIgnoredDuringExecution") or [])
            terms += [(w or {}).get("podAffinityTerm") or {}
                      for w in rules.get("preferredDuringSchedulingIgnoredDuringExecution") or []]
            if any((t or {}).get("namespaces") or (t or {}).get("namespaceSelector") is not None for t in terms):
                return True
        return False
    return False


def matches(quota: Obj, info: ResourceInfo, obj: Obj) -> bool:
    """Whether a quota's scopes select the object (scoped quotas only ever select pods)."""
    spec = quota.get("spec") or {}
    selectors = [(s, "Exists", []) for s in spec.get("scopes") or []]
    selectors += [((e or {}).get("scopeName", ""), (e or {}).get("operator", ""), (e or {}).get("values") or [])
                  for e in (spec.get("scopeSelector") or {}).get("matchExpressions") or []]
    if not selectors:
        return True
    if not (info.group == "" and info.plural == "pods"):
        return False
    return all(_scope_matches(scope, op, values, obj) for scope, op, values in selectors)


def _pretty(items: ResourceList) -> str:
    return ",".join(f"{k}={items[k]}" for k in sorted(items))


class ResourceQuota(Handler):
    name = "ResourceQuota"
    operations = (CREATE, UPDATE)

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self._quotas = state.info("", "v1", "resourcequotas")

    # --- usage ---------------------------------------------------------------------------
    def _namespace_usage(self, quota: Obj, namespace: str, names: list[str]) -> ResourceList:
        """What the quota's selected objects in the namespace use now (the quota controller's sum)."""
        totals: ResourceList = {}
        for group, plural in {r for r in map(_resource_of, names) if r is not None}:
            info = self.state.resolve(group, plural)
            if info is None:
                continue
            for obj in self.state.list(info, namespace):
                if matches(quota, info, obj):
                    add(totals, usage(info, obj))
        return {name: totals.get(name, Quantity.from_int(0)) for name in names}

    def _status(self, quota: Obj) -> tuple[ResourceList, ResourceList]:
        """(hard, used): the recorded status when it is current, else recomputed as the controller would."""
        hard = resource_list((quota.get("spec") or {}).get("hard"))
        status = quota.get("status") or {}
        if resource_list(status.get("hard")) == hard and set(status.get("used") or {}) >= set(hard):
            return hard, resource_list(status["used"])
        namespace = quota["metadata"].get("namespace", "")
        return hard, self._namespace_usage(quota, namespace, list(hard))

    def _delta(self, attrs: AdmissionAttributes) -> ResourceList:
        new = usage(attrs.info, attrs.object or {})
        if attrs.operation == UPDATE and attrs.old_object is not None:
            old = usage(attrs.info, attrs.old_object)
            new = {k: q - old[k] if k in old else q for k, q in new.items()}
        return {k: q for k, q in new.items() if q.sign() > 0}

    # --- admission -----------------------------------------------------------------------
    async def validate(self, attrs: AdmissionAttributes) -> None:
        if attrs.subresource or not attrs.namespace or attrs.object is None:
            return
        if not self.state.list(self._quotas, attrs.namespace):
            return
        delta = self._delta(attrs)
        if not delta:
            return
        charged: set[str] = set()
        attrs.scratch[self.name] = charges = []
        for attempt in range(_CHARGE_ATTEMPTS):
            if attempt:
                await self.state.fresh()
            plans = []
            for quota in self.state.list(self._quotas, attrs.namespace):
                name = quota["metadata"]["name"]
                if name in charged or not matches(quota, attrs.info, attrs.object):
                    continue
                hard, used = self._status(quota)
                requested = {k: q for k, q in delta.items() if k in hard}
                self._check_constraints(attrs, name, hard)
                if not requested:
                    continue
                new_used = {k: used.get(k, Quantity.from_int(0)) + requested[k] if k in requested
                            else used.get(k, Quantity.from_int(0)) for k in hard}
                exceeded = sorted(k for k in requested if hard[k] < new_used[k])
                if exceeded:
                    raise forbidden(attrs, f"exceeded quota: {name}, "
                                           f"requested: {_pretty({k: requested[k] for k in exceeded})}, "
                                           f"used: {_pretty({k: used[k] for k in exceeded if k in used})}, "
                                           f"limited: {_pretty({k: hard[k] for k in exceeded})}")
                plans.append((quota, hard, new_used, requested))
            if attrs.dry_run:
                return
            try:
                for quota, hard, new_used, requested in plans:
                    await self._write_status(quota, hard, new_used)
                    charged.add(quota["metadata"]["name"])
                    charges.append((quota["metadata"]["name"], requested))
                return
            except StatusError as err:
                if err.code != 409:
                    raise
        raise StatusError(409, "Conflict", f"Operation cannot be fulfilled on resourcequotas: the quotas of "
                          f"namespace {attrs.namespace} changed too often while charging this request; try again")

    def _check_constraints(self, attrs: AdmissionAttributes, quota_name: str, hard: ResourceList) -> None:
        """Pods must request/limit cpu and memory explicitly when a quota restricts them."""
        if not attrs.is_resource("", "pods"):
            return
        required = _MUST_SPECIFY & set(hard)
        if not required:
            return
        spec = (attrs.object or {}).get("spec") or {}
        missing: dict[str, set[str]] = {}
        for kind in ("containers", "initContainers"):
            for c in spec.get(kind) or []:
                resources = (c or {}).get("resources") or {}
                have = set(_compute_usage(resource_list(resources.get("requests")),
                                          resource_list(resources.get("limits"))))
                for name in required - have:
                    missing.setdefault(name, set()).add((c or {}).get("name", ""))
        if missing:
            parts = [f"{name} for: {','.join(sorted(missing[name]))}" for name in sorted(missing)]
            raise forbidden(attrs, f"failed quota: {quota_name}: must specify {'; '.join(parts)}")

    async def _write_status(self, quota: Obj, hard: ResourceList, used: ResourceList) -> None:
        updated = {**quota, "status": {"hard": dict((quota.get("spec") or {}).get("hard") or {}),
                                       "used": {k: str(used.get(k, Quantity.from_int(0))) for k in hard}}}
        if updated["status"] != quota.get("status"):
            await self.state.update_status(self._quotas, updated)

    # --- bookkeeping after the write --------------------------------------------------------
    async def aborted(self, attrs: AdmissionAttributes) -> None:
        for quota_name, requested in attrs.scratch.pop(self.name, []):
            await self._adjust(attrs.namespace, quota_name, {k: -q for k, q in requested.items()})

    async def committed(self, attrs: AdmissionAttributes, stored: Obj | None) -> None:
        attrs.scratch.pop(self.name, None)
        if not attrs.namespace:
            return
        try:
            if attrs.is_resource("", "resourcequotas") and not attrs.subresource and attrs.operation != DELETE:
                if stored is not None:
                    await self._refresh(stored)
            elif attrs.operation == DELETE and attrs.old_object is not None:
                await self._release(attrs.info, attrs.namespace, attrs.old_object, None)
            elif attrs.operation == UPDATE and attrs.subresource == "status" and attrs.old_object is not None:
                await self._release(attrs.info, attrs.namespace, attrs.old_object, stored)
        except StatusError as err:
            log.warning("quota usage in namespace %s not updated: %s", attrs.namespace, err)

    async def _refresh(self, quota: Obj) -> None:
        """A new or changed quota gets its status as the quota controller would write it."""
        hard = resource_list((quota.get("spec") or {}).get("hard"))
        used = self._namespace_usage(quota, quota["metadata"].get("namespace", ""), list(hard))
        await self._write_status(quota, hard, used)

    async def _release(self, info: ResourceInfo, namespace: str, old: Obj, new: Obj | None) -> None:
        """An object went away (new is None) or a status change lowered its usage (a pod finished)."""
        before = usage(info, old, honour_grace=False)
        after = usage(info, new, honour_grace=False) if new is not None else {}
        freed = {k: q - after[k] if k in after else q for k, q in before.items()}
        freed = {k: q for k, q in freed.items() if q.sign() > 0}
        if not freed:
            return
        for quota in self.state.list(self._quotas, namespace):
            if matches(quota, info, old) and set(freed) & set((quota.get("spec") or {}).get("hard") or {}):
                await self._adjust(namespace, quota["metadata"]["name"], {k: -q for k, q in freed.items()})

    async def _adjust(self, namespace: str, quota_name: str, change: ResourceList) -> None:
        """Add `change` to a quota's recorded usage (never below zero), retrying on conflicts."""
        for attempt in range(_CHARGE_ATTEMPTS):
            quota = (await self.state.get_fresh(self._quotas, namespace, quota_name) if attempt
                     else self.state.get(self._quotas, namespace, quota_name))
            if quota is None:
                return
            hard, used = self._status(quota)
            zero = Quantity.from_int(0)
            new_used = {}
            for k in hard:
                value = used.get(k, zero) + change[k] if k in change else used.get(k, zero)
                new_used[k] = value if value.sign() >= 0 else zero
            try:
                await self._write_status(quota, hard, new_used)
                return
            except StatusError as err:
                if err.code != 409:
                    raise
