"""Reading CustomResourceDefinition objects: conditions, versions, and the ResourceInfos a CRD serves."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson

from pocketkube.api.kinds import CustomResource, ResourceInfo
from pocketkube.apiserver.printers.docs import DOCS

Obj = dict[str, Any]

GROUP = "apiextensions.k8s.io"
PLURAL = "customresourcedefinitions"
CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"

ESTABLISHED = "Established"
NAMES_ACCEPTED = "NamesAccepted"
TERMINATING = "Terminating"

_VERSION_RE = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_crd(info: ResourceInfo) -> bool:
    return info.group == GROUP and info.plural == PLURAL


def spec(crd: Obj) -> Obj:
    value = crd.get("spec")
    return value if isinstance(value, dict) else {}


def versions(crd: Obj) -> list[Obj]:
    return [v for v in spec(crd).get("versions") or [] if isinstance(v, dict)]


def storage_version(crd: Obj) -> str:
    for version in versions(crd):
        if version.get("storage") is True:
            return str(version.get("name") or "")
    return ""


def condition(crd: Obj, kind: str) -> Obj | None:
    for cond in (crd.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == kind:
            return cond
    return None


def condition_true(crd: Obj, kind: str) -> bool:
    cond = condition(crd, kind)
    return cond is not None and cond.get("status") == "True"


def set_condition(status: Obj, kind: str, value: str, reason: str, message: str) -> None:
    """apihelpers.SetCRDCondition: replace in place (lastTransitionTime moves only on a status change)."""
    conditions = status.setdefault("conditions", [])
    if conditions is None:
        conditions = status["conditions"] = []
    new = {"type": kind, "status": value, "lastTransitionTime": now(), "reason": reason, "message": message}
    for i, cond in enumerate(conditions):
        if isinstance(cond, dict) and cond.get("type") == kind:
            if cond.get("status") == value:
                new["lastTransitionTime"] = cond.get("lastTransitionTime") or new["lastTransitionTime"]
            conditions[i] = new
            return
    conditions.append(new)


def version_priority(name: str) -> tuple[int, int, int, str]:
    """Kube-aware version order (v2 > v1 > v1beta2 > v1beta1 > v1alpha1 > others alphabetically); lower sorts first."""
    m = _VERSION_RE.match(name)
    if m is None:
        return (3, 0, 0, name)
    major = int(m.group(1))
    stage = {None: 0, "beta": 1, "alpha": 2}[m.group(2)]
    minor = int(m.group(3) or 0)
    return (stage, -major, -minor, "")


def _subresources(version: Obj) -> Obj:
    value = version.get("subresources")
    return value if isinstance(value, dict) else {}


def _default_columns() -> list[Obj]:
    # serveDefaultColumnsIfEmpty: a CRD without printer columns shows the object's age.
    return [{"name": "Age", "type": "date", "description": DOCS["meta/v1.ObjectMeta.creationTimestamp"],
             "jsonPath": ".metadata.creationTimestamp"}]


def served_infos(crd: Obj, names: Obj | None = None, *, terminating: bool = False) -> list[ResourceInfo]:
    """One ResourceInfo per served version, highest version priority first (the preferred one).

    ``names`` are the names to serve under: status.acceptedNames once the CRD is established.
    """
    s = spec(crd)
    names = names if names is not None else (s.get("names") or {})
    group = str(s.get("group") or "")
    storage = storage_version(crd)
    every = _every_version(crd)
    out = []
    for version in versions(crd):
        if version.get("served") is not True:
            continue
        out.append(_info(crd, group, version, names, storage, terminating, every))
    return sorted(out, key=lambda i: version_priority(i.version))


def storage_info(crd: Obj) -> ResourceInfo | None:
    """The ResourceInfo of the storage version (served or not): how the controller reaches stored objects."""
    s = spec(crd)
    storage = storage_version(crd)
    for version in versions(crd):
        if version.get("name") == storage:
            return _info(crd, str(s.get("group") or ""), version, s.get("names") or {}, storage, False,
                         _every_version(crd))
    return None


def _schema_json(version: Obj) -> str:
    schema = (version.get("schema") or {}).get("openAPIV3Schema") or {}
    return orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode()


def _every_version(crd: Obj) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """(name, schema JSON) and (name, specReplicasPath) of every version, made once per CRD and shared by its
    ResourceInfos."""
    schemas = []
    paths = []
    for version in versions(crd):
        name = str(version.get("name") or "")
        schemas.append((name, _schema_json(version)))
        scale = _subresources(version).get("scale")
        paths.append((name, str(scale.get("specReplicasPath") or "") if isinstance(scale, dict) else ""))
    return tuple(schemas), tuple(paths)


def _info(crd: Obj, group: str, version: Obj, names: Obj, storage: str, terminating: bool,
          every: tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]) -> ResourceInfo:
    s = spec(crd)
    subresources = _subresources(version)
    scale = subresources.get("scale") if isinstance(subresources.get("scale"), dict) else None
    subs = tuple(name for name in ("status", "scale") if isinstance(subresources.get(name), dict))
    columns = version.get("additionalPrinterColumns") or _default_columns()
    kind = str(names.get("kind") or "")
    name = str(version.get("name") or "")
    version_schemas, replicas_paths = every
    custom = CustomResource(
        crd_name=str((crd.get("metadata") or {}).get("name") or ""),
        list_kind=str(names.get("listKind") or kind + "List"),
        schema_json=next((text for v, text in version_schemas if v == name), None) or _schema_json(version),
        columns_json=orjson.dumps(columns).decode(),
        spec_replicas_path=str(scale.get("specReplicasPath") or "") if scale else "",
        status_replicas_path=str(scale.get("statusReplicasPath") or "") if scale else "",
        label_selector_path=str(scale.get("labelSelectorPath") or "") if scale else "",
        selectable_fields=tuple(str(f.get("jsonPath")) for f in version.get("selectableFields") or []
                                if isinstance(f, dict) and f.get("jsonPath")),
        terminating=terminating,
        version_schemas=version_schemas,
        version_replicas_paths=replicas_paths,
    )
    return ResourceInfo(
        group=group, version=name, kind=kind, plural=str(names.get("plural") or ""),
        namespaced=s.get("scope") == "Namespaced",
        short_names=tuple(str(n) for n in names.get("shortNames") or []),
        categories=tuple(str(c) for c in names.get("categories") or []),
        subresources=subs, storage_version=storage, single_name=str(names.get("singular") or ""),
        custom=custom)
