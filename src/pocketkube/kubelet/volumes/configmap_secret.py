"""configMap and secret sources (pkg/volume/configmap, pkg/volume/secret): fetching the object, and its
keys as files (all of them, or the listed items with their paths and modes)."""

from __future__ import annotations

import base64

from pocketkube.api.kinds import ResourceCatalog
from pocketkube.client.rest import APIError, Client
from pocketkube.kubelet.volumes.atomic_writer import FileProjection
from pocketkube.kubelet.volumes.model import Obj, SourceError

DEFAULT_MODE = 0o644
_catalog = ResourceCatalog()
CONFIGMAPS = _catalog.resource("", "v1", "configmaps")
SECRETS = _catalog.resource("", "v1", "secrets")


async def _fetch(client: Client, kind: str, namespace: str, name: str, optional: bool) -> Obj:
    info = CONFIGMAPS if kind == "configmap" else SECRETS
    try:
        return await client.get(info, name, namespace)
    except APIError as err:
        if err.not_found:
            if optional:  # an optional source that is missing reads as an empty one
                return {"metadata": {"name": name, "namespace": namespace}}
            # the kubelet's object manager words it with the singular resource name
            raise SourceError(f'{kind} "{name}" not found') from err
        raise SourceError(str(err)) from err  # the API server's own words, as upstream passes them on


async def get_configmap(client: Client, namespace: str, name: str, optional: bool) -> Obj:
    return await _fetch(client, "configmap", namespace, name, optional)


async def get_secret(client: Client, namespace: str, name: str, optional: bool) -> Obj:
    return await _fetch(client, "secret", namespace, name, optional)


def _payload(data: dict[str, bytes], items: list[Obj] | None, default_mode: int | None, optional: bool,
             missing_key: str) -> dict[str, FileProjection]:
    mode_default = DEFAULT_MODE if default_mode is None else default_mode
    if not items:
        return {key: FileProjection(value, mode_default) for key, value in data.items()}
    payload = {}
    for item in items:
        key = item.get("key") or ""
        if key not in data:
            if optional:
                continue
            raise SourceError(f"{missing_key}: {key}")
        mode = item.get("mode")
        payload[item.get("path") or ""] = FileProjection(data[key], mode_default if mode is None else mode)
    return payload


def configmap_payload(configmap: Obj, items: list[Obj] | None, default_mode: int | None,
                      optional: bool) -> dict[str, FileProjection]:
    """configmap.MakePayload: `data` as UTF-8, `binaryData` decoded."""
    data = {key: value.encode() for key, value in (configmap.get("data") or {}).items()}
    for key, value in (configmap.get("binaryData") or {}).items():
        data.setdefault(key, base64.b64decode(value))
    return _payload(data, items, default_mode, optional, "configmap references non-existent config key")


def secret_payload(secret: Obj, items: list[Obj] | None, default_mode: int | None,
                   optional: bool) -> dict[str, FileProjection]:
    """secret.MakePayload: the values of `data` decoded from base64."""
    data = {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}
    return _payload(data, items, default_mode, optional, "references non-existent secret key")
