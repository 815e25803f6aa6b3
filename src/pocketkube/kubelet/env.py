"""A container's environment as upstream's makeEnvironmentVariables builds it: service link variables,
envFrom (with prefixes), env with value/valueFrom, and $(VAR) expansion against what came before."""

from __future__ import annotations

import base64
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pocketkube.kubelet.volumes.downward import container_resource_value
from pocketkube.kubelet.volumes.model import SourceError

Obj = dict[str, Any]

_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_REFERENCE = re.compile(r"\$\$|\$\(([^)]*)\)")
MASTER_SERVICE_NAMESPACE = "default"


class EnvError(ValueError):
    """The environment cannot be built: the container is not started (CreateContainerConfigError)."""


@dataclass
class EnvContext:
    """What env values can refer to besides the pod: the node, and lookups through the API."""

    node_name: str
    host_ips: list[str]
    pod_ips: list[str]
    node_allocatable: dict[str, str]
    get_configmap: Callable[[str, str], Awaitable[Obj | None]]    # (namespace, name) -> object or None
    get_secret: Callable[[str, str], Awaitable[Obj | None]]
    list_services: Callable[[str], Awaitable[list[Obj]]]          # namespace -> services


def expand(value: str, env: dict[str, str]) -> str:
    """$(VAR) from env when defined (kept as written otherwise); $$ is a literal $ (upstream expansion.Expand)."""
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)
    return _REFERENCE.sub(replace, value)


def _service_env_name(name: str) -> str:
    return name.upper().replace("-", "_")


def service_env(services: list[Obj]) -> dict[str, str]:
    """{SVC}_SERVICE_HOST/_PORT(_NAME) and the Docker link variables, for services with a cluster IP."""
    env: dict[str, str] = {}
    for service in sorted(services, key=lambda s: s["metadata"]["name"]):
        spec = service.get("spec") or {}
        ip = spec.get("clusterIP")
        ports = spec.get("ports") or []
        if not ip or ip == "None" or not ports:
            continue
        prefix = _service_env_name(service["metadata"]["name"])
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        for port in ports:
            if port.get("name"):
                env[f"{prefix}_SERVICE_PORT_{_service_env_name(port['name'])}"] = str(port["port"])
        first = ports[0]
        proto = (first.get("protocol") or "TCP").lower()
        env[f"{prefix}_PORT"] = f"{proto}://{ip}:{first['port']}"
        for port in ports:
            proto = (port.get("protocol") or "TCP")
            base = f"{prefix}_PORT_{port['port']}_{proto.upper()}"
            env[base] = f"{proto.lower()}://{ip}:{port['port']}"
            env[f"{base}_PROTO"] = proto.lower()
            env[f"{base}_PORT"] = str(port["port"])
            env[f"{base}_ADDR"] = ip
    return env


def field_value(pod: Obj, path: str, ctx: EnvContext) -> str:
    meta = pod["metadata"]
    spec = pod.get("spec") or {}
    simple = {"metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", ""),
              "metadata.uid": meta.get("uid", ""), "spec.nodeName": spec.get("nodeName") or ctx.node_name,
              "spec.serviceAccountName": spec.get("serviceAccountName", ""),
              "status.hostIP": ctx.host_ips[0] if ctx.host_ips else "", "status.hostIPs": ",".join(ctx.host_ips),
              "status.podIP": ctx.pod_ips[0] if ctx.pod_ips else "", "status.podIPs": ",".join(ctx.pod_ips)}
    if path in simple:
        return simple[path]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    raise EnvError(f"unsupported fieldPath: {path}")


def resource_value(pod: Obj, container: Obj, ref: Obj, ctx: EnvContext) -> str:
    """resourceFieldRef: the container's limit or request in units of the divisor, rounded up; an unset limit
    is the node's allocatable (upstream ExtractResourceValueByContainerNameAndNodeAllocatable)."""
    name = ref.get("containerName") or container["name"]
    target = next((c for c in [*(pod["spec"].get("containers") or []), *(pod["spec"].get("initContainers") or [])]
                   if c["name"] == name), None)
    if target is None:
        raise EnvError(f"container {name} not found in pod")
    try:
        return container_resource_value(ref, target, ctx.node_allocatable)
    except SourceError as err:
        raise EnvError(str(err)) from None


async def _source_data(kind: str, namespace: str, name: str, ctx: EnvContext) -> dict[str, str] | None:
    if kind == "configMap":
        obj = await ctx.get_configmap(namespace, name)
        if obj is None:
            return None
        data = dict(obj.get("data") or {})
        for key, value in (obj.get("binaryData") or {}).items():
            data[key] = base64.b64decode(value).decode(errors="replace")
        return data
    obj = await ctx.get_secret(namespace, name)
    if obj is None:
        return None
    return {key: base64.b64decode(value).decode(errors="replace") for key, value in (obj.get("data") or {}).items()}


_KIND_WORDS = {"configMap": ("configmap", "ConfigMap"), "secret": ("secret", "Secret")}


async def _key_ref(kind: str, ref: Obj, namespace: str, ctx: EnvContext) -> str | None:
    name = ref.get("name", "")
    optional = bool(ref.get("optional"))
    data = await _source_data(kind, namespace, name, ctx)
    lower, title = _KIND_WORDS[kind]
    if data is None:
        if optional:
            return None
        raise EnvError(f'{lower} "{name}" not found')
    key = ref.get("key", "")
    if key not in data:
        if optional:
            return None
        raise EnvError(f"couldn't find key {key} in {title} {namespace}/{name}")
    return data[key]


async def container_env(pod: Obj, container: Obj, ctx: EnvContext) -> list[str]:
    """KEY=VALUE entries for the container (the image's own Env is merged in by the engine)."""
    meta = pod["metadata"]
    spec = pod.get("spec") or {}
    namespace = meta.get("namespace") or "default"
    env: dict[str, str] = {}
    # The master service always; the namespace's own services with enableServiceLinks (upstream's rule).
    services = {s["metadata"]["name"]: s for s in await ctx.list_services(MASTER_SERVICE_NAMESPACE)
                if s["metadata"]["name"] == "kubernetes"}
    if spec.get("enableServiceLinks", True):
        services.update({s["metadata"]["name"]: s for s in await ctx.list_services(namespace)})
    env.update(service_env(list(services.values())))

    for source in container.get("envFrom") or []:
        kind = "configMap" if "configMapRef" in source else "secret"
        ref = source.get("configMapRef") or source.get("secretRef") or {}
        data = await _source_data(kind, namespace, ref.get("name", ""), ctx)
        if data is None:
            if ref.get("optional"):
                continue
            raise EnvError(f'{_KIND_WORDS[kind][0]} "{ref.get("name", "")}" not found')
        prefix = source.get("prefix") or ""
        for key, value in data.items():
            if _ENV_NAME.match(prefix + key):  # invalid names are skipped, as upstream does
                env[prefix + key] = value

    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(var.get("value") or "", env)
            continue
        source = var["valueFrom"]
        value: str | None
        if "fieldRef" in source:
            value = field_value(pod, source["fieldRef"]["fieldPath"], ctx)
        elif "resourceFieldRef" in source:
            value = resource_value(pod, container, source["resourceFieldRef"], ctx)
        elif "configMapKeyRef" in source:
            value = await _key_ref("configMap", source["configMapKeyRef"], namespace, ctx)
        elif "secretKeyRef" in source:
            value = await _key_ref("secret", source["secretKeyRef"], namespace, ctx)
        else:
            raise EnvError(f"env {name}: unsupported valueFrom {sorted(source)}")
        if value is not None:
            env[name] = value
    return [f"{key}={value}" for key, value in env.items()]
