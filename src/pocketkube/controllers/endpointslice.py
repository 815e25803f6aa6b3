"""EndpointSlice controller (pkg/controller/endpointslice, k8s.io/endpointslice's reconciler).

For every Service with a selector, EndpointSlices labelled kubernetes.io/service-name=<service> and
endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io, owned by the Service, hold one
endpoint per selected pod with an IP of the slice's address type: conditions ready (serving and not
terminating, or always with publishNotReadyAddresses), serving (Ready) and terminating, targetRef,
nodeName, the node's zone, and hostname when the pod's subdomain names the service. Pods are grouped by
the ports their named targetPorts resolve to; each group is packed into slices of at most 100 endpoints
with upstream's minimal-churn algorithm (keep endpoints where they are, fill slices already being
changed, then the closest-fitting unchanged slice, then new slices). A service with no endpoints keeps
one empty placeholder slice per address type. Deleted services' slices go with the garbage collector.
"""

from __future__ import annotations

import copy
import json
import logging
from datetime import datetime
from typing import Any

from pocketkube.api.selectors import LabelSelector
from pocketkube.client.informer import object_key
from pocketkube.client.rest import APIError
from pocketkube.controllers.base import Controller, split_key
from pocketkube.controllers.deployment_util import format_time
from pocketkube.controllers.endpoints import (
    HEADLESS_LABEL,
    LAST_CHANGE_TRIGGER_TIME,
    STALE_RETRY_SECONDS,
    TriggerTimeTracker,
    find_port,
    is_ipv6,
    is_service_ip_set,
    pod_ips,
    services_selecting,
    services_to_update,
    should_pod_be_in_endpoints,
    should_set_hostname,
    target_ref,
)
from pocketkube.controllers.replicaset import NAMESPACE_TERMINATING_CAUSE, is_pod_ready

log = logging.getLogger(__name__)
Obj = dict[str, Any]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
ZONE_LABEL = "topology.kubernetes.io/zone"
MAX_ENDPOINTS_PER_SLICE = 100
_RESERVED_LABELS = (SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL)
# A generation the tracker records for slices it deleted (upstream deletionExpected).
_DELETION_EXPECTED = -1


def address_types(service: Obj) -> list[str]:
    """getAddressTypesForService: the service's IP families; from the cluster IP without them; both for a
    headless service without families."""
    spec = service.get("spec") or {}
    families = {"IPv4": "IPv4", "IPv6": "IPv6"}
    found = [families[f] for f in spec.get("ipFamilies") or [] if f in families]
    if found:
        return found
    if is_service_ip_set(service):
        return ["IPv6" if is_ipv6(spec["clusterIP"]) else "IPv4"]
    return ["IPv4", "IPv6"]


def endpoint_ports(service: Obj, pod: Obj) -> list[Obj]:
    """getEndpointPorts: the service's ports as this pod serves them (unresolvable ones left out)."""
    spec = service.get("spec") or {}
    ports = []
    for service_port in spec.get("ports") or []:
        number = find_port(pod, service_port)
        if number is None:
            continue
        port: Obj = {"name": service_port.get("name", ""), "protocol": service_port.get("protocol") or "TCP",
                     "port": number}
        if service_port.get("appProtocol"):
            port["appProtocol"] = service_port["appProtocol"]
        ports.append(port)
    return ports


def port_map_key(ports: list[Obj]) -> str:
    return json.dumps(sorted(json.dumps(p, sort_keys=True) for p in ports))


def pod_to_endpoint(pod: Obj, node: Obj | None, service: Obj, address_type: str) -> Obj:
    serving = is_pod_ready(pod)
    terminating = bool(pod["metadata"].get("deletionTimestamp"))
    # For compatibility, "ready" is never true for a terminating pod unless publishNotReadyAddresses.
    ready = bool((service.get("spec") or {}).get("publishNotReadyAddresses")) or (serving and not terminating)
    endpoint: Obj = {"addresses": [ip for ip in pod_ips(pod) if is_ipv6(ip) == (address_type == "IPv6")],
                     "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
                     "targetRef": target_ref(pod)}
    zone = ((node or {}).get("metadata", {}).get("labels") or {}).get(ZONE_LABEL)
    if zone:
        endpoint["zone"] = zone
    if (pod.get("spec") or {}).get("nodeName"):
        endpoint["nodeName"] = pod["spec"]["nodeName"]
    if should_set_hostname(pod, service):
        endpoint["hostname"] = pod["spec"]["hostname"]
    return endpoint


def endpoint_hash(endpoint: Obj) -> str:
    """hashEndpoint: the identity of an endpoint (addresses, hostname, target)."""
    ref = endpoint.get("targetRef") or {}
    return json.dumps([sorted(endpoint.get("addresses") or []), endpoint.get("hostname") or "",
                       ref.get("namespace", ""), ref.get("name", "")])


def endpoints_equal_beyond_hash(a: Obj, b: Obj) -> bool:
    def ref(e: Obj) -> Obj:
        return {k: v for k, v in (e.get("targetRef") or {}).items() if k != "resourceVersion"}
    return (a.get("nodeName"), a.get("zone"), a.get("conditions") or {}, ref(a)) == \
        (b.get("nodeName"), b.get("zone"), b.get("conditions") or {}, ref(b))


def slice_labels(current: Obj, service: Obj) -> tuple[dict[str, str], bool]:
    """setEndpointSliceLabels: the service's labels plus the reserved ones; whether they changed."""
    service_labels = {k: v for k, v in (service["metadata"].get("labels") or {}).items() if k not in _RESERVED_LABELS}
    slice_own = {k: v for k, v in (current.get("metadata", {}).get("labels") or {}).items()
                 if k not in _RESERVED_LABELS}
    labels = dict(service_labels)
    if not is_service_ip_set(service):
        labels[HEADLESS_LABEL] = ""
    labels[SERVICE_NAME_LABEL] = service["metadata"]["name"]
    labels[MANAGED_BY_LABEL] = CONTROLLER_NAME
    changed = slice_own != service_labels or \
        (HEADLESS_LABEL in (current.get("metadata", {}).get("labels") or {})) != (HEADLESS_LABEL in labels)
    return labels, changed


def new_slice(service: Obj, ports: list[Obj], address_type: str) -> Obj:
    meta = service["metadata"]
    owner = {"apiVersion": "v1", "kind": "Service", "name": meta["name"], "uid": meta.get("uid", ""),
             "controller": True, "blockOwnerDeletion": True}
    obj: Obj = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"generateName": f"{meta['name']}-", "namespace": meta["namespace"],
                             "ownerReferences": [owner]},
                "addressType": address_type, "endpoints": [], "ports": ports}
    obj["metadata"]["labels"], _ = slice_labels(obj, service)
    return obj


def owned_by(slice_: Obj, service: Obj) -> bool:
    return any(r.get("uid") == service["metadata"].get("uid") and r.get("kind") == "Service"
               and r.get("apiVersion") == "v1" for r in slice_["metadata"].get("ownerReferences") or [])


def slice_to_fill(slices: list[Obj], count: int, max_endpoints: int) -> Obj | None:
    """getSliceToFill: the unchanged slice that the remaining endpoints fill most closely."""
    closest, closest_diff = None, max_endpoints
    for candidate in slices:
        diff = max_endpoints - (count + len(candidate.get("endpoints") or []))
        if 0 <= diff < closest_diff:
            closest, closest_diff = candidate, diff
            if diff == 0:
                break
    return closest


def reconcile_port_mapping(service: Obj, existing: list[Obj], desired: dict[str, Obj], ports: list[Obj],
                           address_type: str, max_endpoints: int) -> tuple[list[Obj], list[Obj], list[Obj]]:
    """reconcileByPortMapping: (slices to create, to update, to delete) for one set of ports.
    `desired` maps endpoint_hash -> endpoint and is consumed."""
    by_name: dict[str, Obj] = {}
    unchanged: list[str] = []
    to_update: list[str] = []
    to_delete: list[str] = []
    # 1. Keep the endpoints still wanted where they are, updated; drop the rest.
    for current in existing:
        name = current["metadata"]["name"]
        by_name[name] = current
        kept = []
        updated = False
        for endpoint in current.get("endpoints") or []:
            want = desired.pop(endpoint_hash(endpoint), None)
            if want is not None:
                kept.append(want)
                updated = updated or not endpoints_equal_beyond_hash(want, endpoint)
        labels, labels_changed = slice_labels(current, service)
        if updated or len(kept) != len(current.get("endpoints") or []):
            if not kept:
                to_delete.append(name)
                continue
            changed = copy.deepcopy(current)
            changed["endpoints"] = kept
            changed["metadata"]["labels"] = labels
            by_name[name] = changed
            to_update.append(name)
        elif labels_changed:
            changed = copy.deepcopy(current)
            changed["metadata"]["labels"] = labels
            by_name[name] = changed
            to_update.append(name)
        else:
            unchanged.append(name)
    remaining = [desired[k] for k in sorted(desired)]
    # 2. Fill the slices being updated anyway, fullest first.
    if remaining and to_update:
        for name in sorted(to_update, key=lambda n: -len(by_name[n]["endpoints"])):
            room = max_endpoints - len(by_name[name]["endpoints"])
            if room > 0:
                by_name[name]["endpoints"].extend(remaining[:room])
                remaining = remaining[room:]
    # 3. Then one unchanged slice the rest fits in best, else new slices.
    to_create: list[Obj] = []
    while remaining:
        target = None
        if len(remaining) < max_endpoints and unchanged:
            target = slice_to_fill([by_name[n] for n in unchanged], len(remaining), max_endpoints)
        if target is None:
            target = new_slice(service, ports, address_type)
        else:
            target = copy.deepcopy(target)
            by_name[target["metadata"]["name"]] = target
        room = max_endpoints - len(target["endpoints"])
        target["endpoints"].extend(remaining[:room])
        remaining = remaining[room:]
        name = target["metadata"].get("name")
        if name:
            to_update.append(name)
            unchanged.remove(name)
        else:
            to_create.append(target)
    return to_create, [by_name[n] for n in to_update], [by_name[n] for n in to_delete]


def is_placeholder(slice_: Obj, service: Obj, address_type: str) -> bool:
    placeholder = new_slice(service, [], address_type)
    return not slice_.get("endpoints") and not slice_.get("ports") and \
        slice_["metadata"].get("labels") == placeholder["metadata"]["labels"] and \
        slice_.get("addressType") == address_type and owned_by(slice_, service)


class EndpointSliceTracker:
    """The generations this controller wrote (or deleted) per slice, to spot a stale informer cache and
    to ignore the echoes of its own writes."""

    def __init__(self) -> None:
        self._by_service: dict[str, dict[str, int]] = {}

    def should_sync(self, slice_: Obj) -> bool:
        generations = self._by_service.get(_service_key(slice_))
        if generations is None:
            return True
        expected = generations.get(slice_["metadata"].get("uid", ""))
        return expected is None or int(slice_["metadata"].get("generation") or 0) > expected

    def stale(self, service_key: str, slices: list[Obj]) -> bool:
        generations = self._by_service.get(service_key, {})
        seen = set()
        for slice_ in slices:
            uid = slice_["metadata"].get("uid", "")
            seen.add(uid)
            expected = generations.get(uid)
            if expected is None:
                continue
            if expected == _DELETION_EXPECTED or expected > int(slice_["metadata"].get("generation") or 0):
                return True
        # A slice we created or updated that the cache does not show yet.
        return any(g != _DELETION_EXPECTED and uid not in seen for uid, g in generations.items())

    def update(self, slice_: Obj) -> None:
        self._by_service.setdefault(_service_key(slice_), {})[slice_["metadata"]["uid"]] = \
            int(slice_["metadata"].get("generation") or 0)

    def expect_deletion(self, slice_: Obj) -> None:
        self._by_service.setdefault(_service_key(slice_), {})[slice_["metadata"]["uid"]] = _DELETION_EXPECTED

    def handle_deletion(self, slice_: Obj) -> bool:
        """Forget a deleted slice; True if this controller deleted it."""
        generations = self._by_service.get(_service_key(slice_), {})
        return generations.pop(slice_["metadata"].get("uid", ""), None) == _DELETION_EXPECTED

    def has(self, slice_: Obj) -> bool:
        return slice_["metadata"].get("uid", "") in self._by_service.get(_service_key(slice_), {})

    def delete_service(self, key: str) -> None:
        self._by_service.pop(key, None)


def _service_key(slice_: Obj) -> str:
    labels = slice_["metadata"].get("labels") or {}
    return f"{slice_['metadata'].get('namespace', '')}/{labels.get(SERVICE_NAME_LABEL, '')}"


def _managed(slice_: Obj) -> bool:
    return (slice_["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL) == CONTROLLER_NAME


class EndpointSliceController(Controller):
    name = "endpointslice"
    max_endpoints_per_slice = MAX_ENDPOINTS_PER_SLICE

    def setup(self) -> None:
        self.services = self.ctx.informer("", "v1", "services")
        self.pods = self.ctx.informer("", "v1", "pods")
        self.nodes = self.ctx.informer("", "v1", "nodes")
        self.slices = self.ctx.informer("discovery.k8s.io", "v1", "endpointslices")
        self.slice_info = self.ctx.resource("discovery.k8s.io", "v1", "endpointslices")
        self.triggers = TriggerTimeTracker()
        self.tracker = EndpointSliceTracker()
        self.services.add_handler(on_add=self.enqueue, on_update=lambda _old, new: self.enqueue(new),
                                  on_delete=self.enqueue)
        self.pods.add_handler(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_added)
        self.slices.add_handler(on_add=self._slice_added, on_update=self._slice_updated,
                                on_delete=self._slice_deleted)

    # --- event handlers --------------------------------------------------------------
    def _pod_added(self, pod: Obj) -> None:
        for key in services_selecting(self.services, pod["metadata"].get("namespace", ""),
                                      pod["metadata"].get("labels") or {}):
            self.queue.add(key)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        for key in services_to_update(self.services, old, new):
            self.queue.add(key)

    def _slice_added(self, slice_: Obj) -> None:
        if _managed(slice_) and self.tracker.should_sync(slice_):
            self.queue.add(_service_key(slice_))

    def _slice_updated(self, old: Obj, new: Obj) -> None:
        # Someone else's change to our slice (or a slice moving in or out of our management) is undone.
        old_service = (old["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL)
        new_service = (new["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL)
        if _managed(old) != _managed(new) or (_managed(new) and old_service != new_service):
            self.queue.add(_service_key(old))
            self.queue.add(_service_key(new))
        elif _managed(new) and self.tracker.should_sync(new):
            self.queue.add(_service_key(new))

    def _slice_deleted(self, slice_: Obj) -> None:
        if _managed(slice_) and self.tracker.has(slice_) and not self.tracker.handle_deletion(slice_):
            self.queue.add(_service_key(slice_))

    # --- reconcile -----------------------------------------------------------------------
    async def reconcile(self, key: str) -> None:
        namespace, _ = split_key(key)
        service = self.services.store.get(key)
        if service is None:
            self.triggers.delete(key)
            self.tracker.delete_service(key)
            return  # the garbage collector deletes the slices the Service owned
        spec = service.get("spec") or {}
        if spec.get("type") == "ExternalName" or spec.get("selector") is None:
            return
        selector = LabelSelector.from_set(spec["selector"])
        pods = [p for p in self.pods.store.by_index("namespace", namespace)
                if selector.matches(p["metadata"].get("labels") or {})]
        name = service["metadata"]["name"]
        slices = [s for s in self.slices.store.by_index("label", f"{SERVICE_NAME_LABEL}={name}")
                  if s["metadata"].get("namespace") == namespace and _managed(s)
                  and not s["metadata"].get("deletionTimestamp")]
        if self.tracker.stale(key, slices):
            self.queue.add_after(key, STALE_RETRY_SECONDS)  # the informer has not shown our writes yet
            return
        trigger = self.triggers.compute(service, pods)
        try:
            await self._reconcile_service(service, pods, slices, trigger)
        except APIError as err:
            await self.ctx.recorder.event(service, "Warning", "FailedToUpdateEndpointSlices",
                                          f"Error updating Endpoint Slices for Service {key}: {err}")
            raise

    async def _reconcile_service(self, service: Obj, pods: list[Obj], slices: list[Obj],
                                 trigger: datetime | None) -> None:
        types = address_types(service)
        to_delete = [s for s in slices if s.get("addressType") not in types]
        errors: list[str] = []
        for address_type in types:
            existing = [s for s in slices if s.get("addressType") == address_type]
            errors += await self._reconcile_address_type(service, pods, existing, trigger, address_type)
        for slice_ in to_delete:
            await self._delete(slice_)
        if errors:
            raise RuntimeError("; ".join(errors))

    async def _reconcile_address_type(self, service: Obj, pods: list[Obj], existing: list[Obj],
                                      trigger: datetime | None, address_type: str) -> list[str]:
        to_create: list[Obj] = []
        to_update: list[Obj] = []
        to_delete: list[Obj] = []
        existing_by_ports: dict[str, list[Obj]] = {}
        for slice_ in existing:
            if owned_by(slice_, service):
                existing_by_ports.setdefault(port_map_key(slice_.get("ports") or []), []).append(slice_)
            else:
                to_delete.append(slice_)
        desired_ports: dict[str, list[Obj]] = {}
        desired: dict[str, dict[str, Obj]] = {}
        errors: list[str] = []
        publish_not_ready = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
        for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
            if not should_pod_be_in_endpoints(pod, True):
                continue
            ports = endpoint_ports(service, pod)
            pkey = port_map_key(ports)
            desired.setdefault(pkey, {})
            desired_ports.setdefault(pkey, ports)
            node_name = (pod.get("spec") or {}).get("nodeName", "")
            node = self.nodes.store.get(node_name) if node_name else None
            if node is None and not publish_not_ready:
                # A pod on a node that does not exist is left out, and the service looked at again.
                errors.append(f"skipping Pod {pod['metadata']['name']} for Service {object_key(service)}: "
                              f"Node {node_name} Not Found")
                continue
            endpoint = pod_to_endpoint(pod, node, service, address_type)
            if endpoint["addresses"]:
                desired[pkey][endpoint_hash(endpoint)] = endpoint
        for pkey, endpoints in desired.items():
            create, update, delete = reconcile_port_mapping(service, existing_by_ports.get(pkey, []), endpoints,
                                                            desired_ports[pkey], address_type,
                                                            self.max_endpoints_per_slice)
            to_create += create
            to_update += update
            to_delete += delete
        for pkey, slices in existing_by_ports.items():
            if pkey not in desired:
                to_delete += slices
        if len(existing) == len(to_delete) and not to_create:
            # Nothing to show: keep (or make) one empty placeholder slice.
            if len(to_delete) == 1 and is_placeholder(to_delete[0], service, address_type):
                to_delete = []
            else:
                to_create.append(new_slice(service, [], address_type))
        await self._finalize(service, to_create, to_update, to_delete, trigger)
        return errors

    async def _finalize(self, service: Obj, to_create: list[Obj], to_update: list[Obj], to_delete: list[Obj],
                        trigger: datetime | None) -> None:
        # Reuse slices about to be deleted for the ones about to be created: fewer writes, stable names.
        for doomed in list(to_delete):
            if not to_create:
                break
            if doomed.get("addressType") == to_create[-1].get("addressType") and owned_by(doomed, service):
                fresh = to_create.pop()
                fresh["metadata"] = {**copy.deepcopy(doomed["metadata"]), "labels": fresh["metadata"]["labels"]}
                to_update.append(fresh)
                to_delete.remove(doomed)
        if not service["metadata"].get("deletionTimestamp"):
            for slice_ in to_create:
                _stamp(slice_, trigger)
                try:
                    created = await self.client.create(self.slice_info, slice_)
                except APIError as err:
                    causes = [c.get("reason") for c in (err.body.get("details") or {}).get("causes") or []]
                    if NAMESPACE_TERMINATING_CAUSE in causes:
                        return
                    raise
                self.tracker.update(created)
        for slice_ in to_update:
            _stamp(slice_, trigger)
            self.tracker.update(await self.client.update(self.slice_info, slice_))
        for slice_ in to_delete:
            await self._delete(slice_)

    async def _delete(self, slice_: Obj) -> None:
        meta = slice_["metadata"]
        try:
            await self.client.delete(self.slice_info, meta["name"], meta["namespace"])
        except APIError as err:
            if not err.not_found:
                raise
            return
        self.tracker.expect_deletion(slice_)


def _stamp(slice_: Obj, trigger: datetime | None) -> None:
    """addTriggerTimeAnnotation: on every slice written, the trigger time (or none)."""
    annotations = slice_["metadata"].setdefault("annotations", {})
    if trigger is not None:
        annotations[LAST_CHANGE_TRIGGER_TIME] = format_time(trigger)
    else:
        annotations.pop(LAST_CHANGE_TRIGGER_TIME, None)
    if not annotations:
        del slice_["metadata"]["annotations"]
