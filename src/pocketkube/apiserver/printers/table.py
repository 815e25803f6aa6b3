"""Building meta.k8s.io/v1 Tables: the printer registry, the default table and includeObject handling.

Upstream's server always prints with Wide set, so rows carry every column; clients such as kubectl
drop the priority > 0 columns unless asked for `-o wide`.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime

from pocketkube.api.errors import bad_request
from pocketkube.api.kinds import ResourceInfo
from pocketkube.apiserver.crd import columns as crd_columns
from pocketkube.apiserver.printers import cluster, configuration, core, storage, workloads
from pocketkube.apiserver.printers.base import NAME, Obj, Printer, column, meta, name, parse_time
from pocketkube.apiserver.printers.docs import DOCS

# One entry per (group, version, kind): the version matters where a served version is shaped unlike
# the internal one upstream prints (autoscaling/v1 HPAs, events.k8s.io Events).
PRINTERS: dict[tuple[str, str, str], Printer] = {**core.PRINTERS, **workloads.PRINTERS, **cluster.PRINTERS,
                                                 **configuration.PRINTERS, **storage.PRINTERS}

# rest.NewDefaultTableConvertor's columns, for kinds without a printer (Roles, LimitRanges, ...).
_DEFAULT_COLUMNS = (NAME, column("Created At", "date", DOCS["meta/v1.ObjectMeta.creationTimestamp"]))

INCLUDE_OBJECT_VALUES = ("None", "Metadata", "Object")


def _printer(info: ResourceInfo) -> Printer | None:
    if info.custom is not None:  # additionalPrinterColumns of the CRD's version
        return crd_columns.printer_for(info)
    return PRINTERS.get((info.group, info.version, info.kind))


def column_definitions(info: ResourceInfo) -> list[Obj]:
    """The Table columnDefinitions for a resource (fresh copies, safe to modify)."""
    printer = _printer(info)
    return copy.deepcopy(list(printer.columns if printer else _DEFAULT_COLUMNS))


def _created_at(obj: Obj) -> str:
    """The default table's cell: creationTimestamp in RFC 3339 UTC, Go's zero time when unset."""
    created = parse_time(meta(obj).get("creationTimestamp"))
    return created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if created else "0001-01-01T00:00:00Z"


def _row_object(info: ResourceInfo, obj: Obj, include_object: str) -> Obj | None:
    if include_object == "None":
        return None
    if include_object == "Object":
        # Upstream converts the row's object to the request's version, which sets kind and apiVersion.
        rest = {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
        return {"kind": info.kind, "apiVersion": info.group_version, **rest}
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta(obj)}


def to_table(info: ResourceInfo, objects: list[Obj], *, list_meta: Obj, include_object: str = "Metadata",
             now: datetime | None = None) -> Obj:
    """Render objects (plain dicts of `info`'s version) as a meta.k8s.io/v1 Table.

    include_object follows the includeObject query parameter: "None" leaves rows without an object,
    "Metadata" (also the meaning of "") gives a PartialObjectMetadata, "Object" the full object.
    `now` fixes the reference time of the age columns (tests); it defaults to the current time.
    """
    include_object = include_object or "Metadata"
    if include_object not in INCLUDE_OBJECT_VALUES:
        raise bad_request(f'unrecognized includeObject value: "{include_object}"')
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=UTC)

    printer = _printer(info)
    rows = []
    for obj in objects:
        row: Obj = {"cells": printer.cells(obj, now) if printer else [name(obj), _created_at(obj)]}
        conditions = printer.conditions(obj) if printer and printer.conditions else None
        if conditions:
            row["conditions"] = conditions
        row["object"] = _row_object(info, obj, include_object)
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": column_definitions(info),
        "rows": rows,
    }
