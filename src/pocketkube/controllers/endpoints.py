"""Endpoints controller (pkg/controller/endpoint), and the helpers it shares with the EndpointSlice
controller (pkg/controller/util/endpoint, pkg/api/v1/pod).

For every Service with a selector (ExternalName services and services without a selector are left to
their users), the Endpoints object of the same name lists the selected pods that have an IP: Ready pods
(or every pod, with publishNotReadyAddresses) under `addresses`, the others under `notReadyAddresses`,
with each service port's targetPort resolved in each pod (named ports may differ from pod to pod), so
the subsets are repacked by port set as upstream's RepackSubsets does.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pocketkube.api.selectors import LabelSelector
from pocketkube.client.informer import Informer, object_key
from pocketkube.client.rest import APIError
from pocketkube.controllers.base import Controller, split_key
from pocketkube.controllers.deployment_util import format_time, parse_time
from pocketkube.controllers.replicaset import NAMESPACE_TERMINATING_CAUSE, is_pod_ready, ready_condition

log = logging.getLogger(__name__)
Obj = dict[str, Any]

LAST_CHANGE_TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"
OVER_CAPACITY = "endpoints.kubernetes.io/over-capacity"
HEADLESS_LABEL = "service.kubernetes.io/headless"
LEADER_ELECTION_ANNOTATION = "control-plane.alpha.kubernetes.io/leader"
# Upstream maxCapacity: addresses beyond it are truncated (and the over-capacity annotation set).
MAX_CAPACITY = 1000
# How soon a service is looked at again when the informer cache is older than this controller's writes.
STALE_RETRY_SECONDS = 0.05


# --- pods ----------------------------------------------------------------------------------
def should_pod_be_in_endpoints(pod: Obj, include_terminating: bool) -> bool:
    """ShouldPodBeInEndpoints: not terminal, has an IP, and not terminating unless asked for."""
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return False
    if not status.get("podIP") and not status.get("podIPs"):
        return False
    return include_terminating or not pod["metadata"].get("deletionTimestamp")


def should_set_hostname(pod: Obj, service: Obj) -> bool:
    spec = pod.get("spec") or {}
    return bool(spec.get("hostname")) and spec.get("subdomain") == service["metadata"]["name"] and \
        service["metadata"].get("namespace") == pod["metadata"].get("namespace")


def pod_ips(pod: Obj) -> list[str]:
    status = pod.get("status") or {}
    ips = [p.get("ip", "") for p in status.get("podIPs") or [] if p.get("ip")]
    return ips or ([status["podIP"]] if status.get("podIP") else [])


def is_ipv6(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).version == 6
    except ValueError:
        return False


def find_port(pod: Obj, service_port: Obj) -> int | None:
    """podutil.FindPort: an int targetPort as is; a named one from the pod's containers (and sidecars)
    with the same protocol."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    protocol = service_port.get("protocol") or "TCP"
    spec = pod.get("spec") or {}
    sidecars = [c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
    for container in [*(spec.get("containers") or []), *sidecars]:
        for port in container.get("ports") or []:
            if port.get("name") == target and (port.get("protocol") or "TCP") == protocol:
                return int(port["containerPort"])
    return None


def target_ref(pod: Obj) -> Obj:
    meta = pod["metadata"]
    return {"kind": "Pod", "namespace": meta.get("namespace", ""), "name": meta["name"], "uid": meta.get("uid", "")}


def services_selecting(services: Informer, namespace: str, labels: dict[str, str]) -> set[str]:
    """getServicesForPod: keys of the services whose (non-nil) selector matches the labels."""
    keys = set()
    for service in services.store.by_index("namespace", namespace):
        selector = (service.get("spec") or {}).get("selector")
        if selector is not None and LabelSelector.from_set(selector).matches(labels):
            keys.add(object_key(service))
    return keys


def pod_endpoints_changed(old: Obj, new: Obj) -> tuple[bool, bool]:
    """podEndpointsChanged: (the pod's endpoints may change, the services it matches may change)."""
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    labels_changed = (old["metadata"].get("labels") or {}) != (new["metadata"].get("labels") or {}) or \
        (old_spec.get("hostname"), old_spec.get("subdomain")) != (new_spec.get("hostname"), new_spec.get("subdomain"))
    if old["metadata"].get("deletionTimestamp") != new["metadata"].get("deletionTimestamp"):
        return True, labels_changed
    if is_pod_ready(old) != is_pod_ready(new):
        return True, labels_changed
    return pod_ips(old) != pod_ips(new), labels_changed


def services_to_update(services: Informer, old: Obj, new: Obj) -> set[str]:
    """GetServicesToUpdateOnPodChange."""
    if old["metadata"].get("resourceVersion") == new["metadata"].get("resourceVersion"):
        return set()
    pod_changed, labels_changed = pod_endpoints_changed(old, new)
    namespace = new["metadata"].get("namespace", "")
    if not pod_changed and not labels_changed:
        return set()
    current = services_selecting(services, namespace, new["metadata"].get("labels") or {})
    if not labels_changed:
        return current
    before = services_selecting(services, namespace, old["metadata"].get("labels") or {})
    return current | before if pod_changed else current ^ before


def is_service_ip_set(service: Obj) -> bool:
    cluster_ip = (service.get("spec") or {}).get("clusterIP") or ""
    return cluster_ip not in ("", "None")


# --- trigger times -------------------------------------------------------------------------
@dataclass
class _ServiceState:
    pod_times: dict[str, datetime] = field(default_factory=dict)
    service_time: datetime | None = None


class TriggerTimeTracker:
    """What to report as endpoints.kubernetes.io/last-change-trigger-time: the earliest change (a pod's
    Ready transition, or the service's creation) that this sync is the first to see."""

    def __init__(self) -> None:
        self._states: dict[str, _ServiceState] = {}

    def compute(self, service: Obj, pods: list[Obj]) -> datetime | None:
        key = object_key(service)
        state = self._states.get(key)
        known = state is not None
        state = state or _ServiceState()
        earliest: datetime | None = None
        pod_times: dict[str, datetime] = {}
        for pod in pods:
            when = parse_time((ready_condition(pod) or {}).get("lastTransitionTime"))
            if when is None:
                continue
            name = pod["metadata"]["name"]
            pod_times[name] = when
            last = state.pod_times.get(name)
            if last is None or when > last:
                earliest = when if earliest is None else min(earliest, when)
        created = parse_time(service["metadata"].get("creationTimestamp"))
        if created is not None and (state.service_time is None or created > state.service_time):
            earliest = created if earliest is None else min(earliest, created)
        self._states[key] = _ServiceState(pod_times, created)
        return earliest if known else created

    def delete(self, key: str) -> None:
        self._states.pop(key, None)


# --- subsets -------------------------------------------------------------------------------
def _address_sort_key(addr: Obj) -> tuple[bytes, int, str]:
    # LessEndpointAddress: IP (compared as bytes), then addresses without a targetRef first, then UID.
    ref = addr.get("targetRef")
    return addr.get("ip", "").encode(), 1 if ref else 0, (ref or {}).get("uid", "")


def _port_sort_key(port: Obj) -> tuple[str, int, str]:
    return port.get("name", ""), int(port.get("port", 0)), port.get("protocol", "")


def repack_subsets(subsets: list[Obj]) -> list[Obj]:
    """RepackSubsets: one subset per distinct set of addresses sharing the same ports; an address ready
    in any input subset is ready."""
    # port (as a hashable) -> address key -> (address, ready)
    by_port: dict[str, dict[str, tuple[Obj, bool]]] = {}
    ports: dict[str, Obj | None] = {}
    for subset in subsets:
        for port in subset.get("ports") or [None]:
            pkey = json.dumps(port, sort_keys=True)
            ports[pkey] = port
            addrs = by_port.setdefault(pkey, {})
            for ready, kind in ((True, "addresses"), (False, "notReadyAddresses")):
                for addr in subset.get(kind) or []:
                    akey = json.dumps([addr.get("ip"), (addr.get("targetRef") or {}).get("uid")])
                    prev = addrs.get(akey)
                    # As upstream, an address not ready for this port in any subset stays not ready.
                    if prev is None or prev[1]:
                        addrs[akey] = (prev[0] if prev else addr, ready)
    # Group ports that have exactly the same addresses (with the same readiness).
    groups: dict[str, tuple[dict[str, tuple[Obj, bool]], list[Obj]]] = {}
    for pkey, addrs in by_port.items():
        akey = json.dumps(sorted((k, ready) for k, (_, ready) in addrs.items()))
        entry = groups.setdefault(akey, (addrs, []))
        if ports[pkey] is not None:
            entry[1].append(ports[pkey])  # type: ignore[arg-type]
    final = []
    for addrs, port_list in groups.values():
        subset: Obj = {}
        ready = sorted((a for a, r in addrs.values() if r), key=_address_sort_key)
        not_ready = sorted((a for a, r in addrs.values() if not r), key=_address_sort_key)
        if ready:
            subset["addresses"] = ready
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        if port_list:
            subset["ports"] = sorted(port_list, key=_port_sort_key)
        final.append(subset)
    return sorted(final, key=lambda s: json.dumps(s, sort_keys=True))


def truncate_subsets(subsets: list[Obj]) -> bool:
    """truncateEndpoints: keep at most MAX_CAPACITY addresses, ready ones first, spread proportionally."""
    total_ready = sum(len(s.get("addresses") or []) for s in subsets)
    total_not_ready = sum(len(s.get("notReadyAddresses") or []) for s in subsets)
    if total_ready + total_not_ready <= MAX_CAPACITY:
        return False
    truncate_ready = total_ready > MAX_CAPACITY
    limit = MAX_CAPACITY if truncate_ready else MAX_CAPACITY - total_ready
    total = total_ready if truncate_ready else total_not_ready
    room = limit
    for subset in subsets:
        kind = "addresses" if truncate_ready else "notReadyAddresses"
        count = len(subset.get(kind) or [])
        take = min(math.ceil(count / total * limit), room)
        subset[kind] = (subset.get(kind) or [])[:take]
        if truncate_ready:
            subset.pop("notReadyAddresses", None)
        room -= len(subset[kind])
        if not subset[kind]:
            del subset[kind]
    return True


def address_for_service(service: Obj, pod: Obj) -> Obj | None:
    """podToEndpointAddressForService: the pod IP of the service's (first) IP family."""
    spec = service.get("spec") or {}
    families = spec.get("ipFamilies") or []
    if families:
        v6 = families[0] == "IPv6"
    elif is_service_ip_set(service):
        v6 = is_ipv6(spec["clusterIP"])
    else:
        v6 = is_ipv6((pod.get("status") or {}).get("podIP", ""))
    ip = next((ip for ip in pod_ips(pod) if is_ipv6(ip) == v6), None)
    if ip is None:
        return None
    address: Obj = {"ip": ip}
    if (pod.get("spec") or {}).get("nodeName"):
        address["nodeName"] = pod["spec"]["nodeName"]
    address["targetRef"] = target_ref(pod)
    return address


def endpoint_subsets(service: Obj, pods: list[Obj]) -> list[Obj]:
    """The subsets syncService computes for a service from its selected pods."""
    spec = service.get("spec") or {}
    tolerate_unready = bool(spec.get("publishNotReadyAddresses"))
    subsets: list[Obj] = []
    for pod in pods:
        if not should_pod_be_in_endpoints(pod, tolerate_unready):
            continue
        address = address_for_service(service, pod)
        if address is None:
            continue
        if should_set_hostname(pod, service):
            address["hostname"] = pod["spec"]["hostname"]
        kind = "addresses" if tolerate_unready or is_pod_ready(pod) else "notReadyAddresses"
        if not spec.get("ports"):
            if spec.get("clusterIP") == "None":  # a headless service may have no ports
                subsets.append({kind: [address]})
            continue
        for service_port in spec["ports"]:
            number = find_port(pod, service_port)
            if number is None:
                continue
            port: Obj = {"name": service_port.get("name", ""), "port": number,
                         "protocol": service_port.get("protocol") or "TCP"}
            if not port["name"]:
                del port["name"]
            if service_port.get("appProtocol"):
                port["appProtocol"] = service_port["appProtocol"]
            subsets.append({kind: [address], "ports": [port]})
    return repack_subsets(subsets)


def _strip_ref_versions(subsets: list[Obj]) -> list[Obj]:
    """Subsets compared ignoring targetRef.resourceVersion (a pod's unrelated updates change nothing)."""
    out = json.loads(json.dumps(subsets))
    for subset in out:
        for kind in ("addresses", "notReadyAddresses"):
            for addr in subset.get(kind) or []:
                (addr.get("targetRef") or {}).pop("resourceVersion", None)
    return out


class EndpointsController(Controller):
    name = "endpoint"

    def setup(self) -> None:
        self.services = self.ctx.informer("", "v1", "services")
        self.pods = self.ctx.informer("", "v1", "pods")
        self.endpoints = self.ctx.informer("", "v1", "endpoints")
        self.endpoints_info = self.ctx.resource("", "v1", "endpoints")
        self.triggers = TriggerTimeTracker()
        # Endpoints we replaced: resourceVersions the informer may still hand back (staleEndpointsTracker).
        self._stale: dict[str, int] = {}
        self._created: set[str] = set()
        self.services.add_handler(on_add=self.enqueue, on_update=lambda _old, new: self.enqueue(new),
                                  on_delete=self.enqueue)
        self.pods.add_handler(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_added)
        self.endpoints.add_handler(on_add=lambda obj: self._created.discard(object_key(obj)),
                                   on_delete=self._endpoints_deleted)

    def _pod_added(self, pod: Obj) -> None:
        for key in services_selecting(self.services, pod["metadata"].get("namespace", ""),
                                      pod["metadata"].get("labels") or {}):
            self.queue.add(key)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        for key in services_to_update(self.services, old, new):
            self.queue.add(key)

    def _endpoints_deleted(self, endpoints: Obj) -> None:
        self._created.discard(object_key(endpoints))
        self.enqueue(endpoints)

    async def run(self) -> None:
        # checkLeftoverEndpoints, once at start: Endpoints whose Service went while we were down are deleted
        # (later, only a Service's deletion deletes its Endpoints, so users may pre-create them).
        for endpoints in self.endpoints.store.list():
            if LEADER_ELECTION_ANNOTATION not in (endpoints["metadata"].get("annotations") or {}):
                self.enqueue(endpoints)
        await super().run()

    async def reconcile(self, key: str) -> None:
        namespace, name = split_key(key)
        service = self.services.store.get(key)
        if service is None:
            current = self.endpoints.store.get(key)
            if current is not None and LEADER_ELECTION_ANNOTATION in (current["metadata"].get("annotations") or {}):
                return
            try:
                await self.client.delete(self.endpoints_info, name, namespace)
            except APIError as err:
                if not err.not_found:
                    raise
            self.triggers.delete(key)
            self._stale.pop(key, None)
            self._created.discard(key)
            return
        spec = service.get("spec") or {}
        if spec.get("type") == "ExternalName" or spec.get("selector") is None:
            return  # such services get no endpoints from this controller (users manage them)
        selector = LabelSelector.from_set(spec["selector"])
        pods = [p for p in self.pods.store.by_index("namespace", namespace)
                if selector.matches(p["metadata"].get("labels") or {})]
        trigger = self.triggers.compute(service, pods)
        subsets = endpoint_subsets(service, pods)
        current = self.endpoints.store.get(key)
        if current is None and key in self._created:
            self.queue.add_after(key, STALE_RETRY_SECONDS)  # created, not yet in the informer
            return
        if current is not None and int(current["metadata"].get("resourceVersion") or 0) <= self._stale.get(key, -1):
            # The informer has not yet shown our last write: look again once it has (staleEndpointsTracker).
            self.queue.add_after(key, STALE_RETRY_SECONDS)
            return
        service_labels = service["metadata"].get("labels") or {}
        if current is not None:
            labels = {k: v for k, v in (current["metadata"].get("labels") or {}).items() if k != HEADLESS_LABEL}
            count = sum(len(s.get("addresses") or []) + len(s.get("notReadyAddresses") or [])
                        for s in current.get("subsets") or [])
            capacity_ok = count <= MAX_CAPACITY and OVER_CAPACITY not in (current["metadata"].get("annotations") or {})
            if _strip_ref_versions(current.get("subsets") or []) == subsets and labels == service_labels \
                    and capacity_ok:
                return
        await self._write(service, current, subsets, trigger)

    async def _write(self, service: Obj, current: Obj | None, subsets: list[Obj], trigger: datetime | None) -> None:
        meta = service["metadata"]
        new: Obj = json.loads(json.dumps(current)) if current is not None else {
            "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": meta["name"], "namespace": meta["namespace"]}}
        annotations = dict(new["metadata"].get("annotations") or {})
        if trigger is not None:
            annotations[LAST_CHANGE_TRIGGER_TIME] = format_time(trigger)
        else:
            annotations.pop(LAST_CHANGE_TRIGGER_TIME, None)
        if truncate_subsets(subsets):
            annotations[OVER_CAPACITY] = "truncated"
        else:
            annotations.pop(OVER_CAPACITY, None)
        labels = dict(meta.get("labels") or {})
        if not is_service_ip_set(service):
            labels[HEADLESS_LABEL] = ""
        else:
            labels.pop(HEADLESS_LABEL, None)
        new["metadata"]["annotations"] = annotations
        new["metadata"]["labels"] = labels
        new["subsets"] = subsets
        if not subsets:
            new.pop("subsets")
        key = object_key(service)
        try:
            if current is None:
                await self.client.create(self.endpoints_info, new)
                self._created.add(key)
                return
            updated = await self.client.update(self.endpoints_info, new)
        except APIError as err:
            causes = [c.get("reason") for c in (err.body.get("details") or {}).get("causes") or []]
            if current is None and err.status == 403 and NAMESPACE_TERMINATING_CAUSE in causes:
                return  # creates fail until the namespace is gone: drop the item
            if current is None:
                await self.ctx.recorder.event(new, "Warning", "FailedToCreateEndpoint", "Failed to create endpoint "
                                              f"for service {meta['namespace']}/{meta['name']}: {err}")
            else:
                await self.ctx.recorder.event(new, "Warning", "FailedToUpdateEndpoint", "Failed to update endpoint "
                                              f"{meta['namespace']}/{meta['name']}: {err}")
            raise
        if updated["metadata"].get("resourceVersion") != current["metadata"].get("resourceVersion"):
            self._stale[key] = int(current["metadata"].get("resourceVersion") or 0)
