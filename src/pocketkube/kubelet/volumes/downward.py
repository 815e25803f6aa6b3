"""The downward API (pkg/volume/downwardapi, pkg/fieldpath, pkg/api/v1/resource): pod fields and
container resources as file contents, formatted as upstream formats them."""

from __future__ import annotations

import math
import re
from fractions import Fraction

from pocketkube.api.quantity import parse_quantity
from pocketkube.kubelet.volumes.atomic_writer import FileProjection, clean_path
from pocketkube.kubelet.volumes.model import Obj, SourceError, aggregate

DEFAULT_MODE = 0o644
INT64_MAX = 2**63 - 1
_SIMPLE_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_MERGED_LIMITS = ("cpu", "memory", "ephemeral-storage")


def go_quote(text: str) -> str:
    """Go's strconv.Quote (fmt %q): printable characters kept, the rest escaped as Go escapes them."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char.isprintable():  # Go's unicode.IsPrint: letters, marks, numbers, punctuation, symbols, ' '
            out.append(char)
        elif char in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xD800 <= code <= 0xDFFF:  # not a valid rune: Go writes the replacement character
            out.append("\\ufffd")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def format_map(values: dict[str, str]) -> str:
    """fieldpath.FormatMap: `key="value"` lines sorted by key, without a final newline."""
    return "\n".join(f"{key}={go_quote(values[key])}" for key in sorted(values))


def _qualified_name_error(name: str) -> str | None:
    prefix, _, short = name.rpartition("/")
    if "/" in name and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        return "prefix part must be a lowercase RFC 1123 subdomain"
    if not short or len(short) > 63 or not _QUALIFIED_NAME.match(short):
        return ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                "with an alphanumeric character, and be at most 63 characters")
    return None


def split_subscript(path: str) -> tuple[str, str] | None:
    """fieldpath.SplitMaybeSubscriptedPath: "metadata.labels['app']" -> ("metadata.labels", "app")."""
    if not path.endswith("']"):
        return None
    head, sep, subscript = path[:-2].partition("['")
    if not sep or not head:
        return None
    return head, subscript


def extract_field_path(pod: Obj, path: str) -> str:
    """fieldpath.ExtractFieldPathAsString for a pod."""
    meta = pod.get("metadata") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    subscripted = split_subscript(path)
    if subscripted is not None:
        head, key = subscripted
        if head in ("metadata.annotations", "metadata.labels"):
            problem = _qualified_name_error(key.lower() if head == "metadata.annotations" else key)
            if problem:
                raise SourceError(f"invalid key subscript in {path}: {problem}")
            return (annotations if head == "metadata.annotations" else labels).get(key, "")
        raise SourceError(f'fieldPath "{path}" does not support subscript')
    if path == "metadata.annotations":
        return format_map(annotations)
    if path == "metadata.labels":
        return format_map(labels)
    if path in ("metadata.name", "metadata.namespace", "metadata.uid"):
        return str(meta.get(path.split(".", 1)[1]) or "")
    raise SourceError(f"unsupported fieldPath: {path}")


def pod_field_value(pod: Obj, path: str) -> str:
    """The kubelet's podFieldSelectorRuntimeValue (environment variables): node, service account and IPs
    besides what extract_field_path knows."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    if path == "spec.nodeName":
        return spec.get("nodeName") or ""
    if path == "spec.serviceAccountName":
        return spec.get("serviceAccountName") or ""
    if path in ("status.hostIP", "status.podIP"):
        return status.get(path.split(".", 1)[1]) or ""
    if path in ("status.hostIPs", "status.podIPs"):
        return ",".join(entry.get("ip", "") for entry in status.get(path.split(".", 1)[1]) or [])
    return extract_field_path(pod, path)


def find_container(pod: Obj, name: str) -> Obj:
    spec = pod.get("spec") or {}
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if container.get("name") == name:
            return container
    raise SourceError(f"container {name} not found")


def _quantity(value: object) -> Fraction:
    return parse_quantity(str(value)).as_fraction() if value is not None else Fraction(0)


def container_resource_value(field_ref: Obj, container: Obj, allocatable: dict[str, str]) -> str:
    """ExtractContainerResourceValue after MergeContainerResourceLimits: an unset (or zero) cpu, memory or
    ephemeral-storage limit reads as the node's allocatable; the value is divided by the divisor and
    rounded up."""
    resources = container.get("resources") or {}
    limits = dict(resources.get("limits") or {})
    requests = resources.get("requests") or {}
    for name in _MERGED_LIMITS:
        if _quantity(limits.get(name)) == 0 and name in allocatable:
            limits[name] = allocatable[name]
    divisor = _quantity(field_ref.get("divisor"))
    if divisor == 0:
        divisor = Fraction(1)
    resource = field_ref.get("resource") or ""
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or not (name in _MERGED_LIMITS or name.startswith("hugepages-")):
        raise SourceError(f"unsupported container resource : {resource}")
    value = _quantity((limits if kind == "limits" else requests).get(name))
    if value <= 0 or divisor <= 0:
        return "0"
    return str(min(math.ceil(value / divisor), INT64_MAX))


def collect_data(items: list[Obj], pod: Obj, allocatable: dict[str, str],
                 default_mode: int | None) -> dict[str, FileProjection]:
    """downwardapi.CollectData: one file per item; every failing item is reported together."""
    mode_default = DEFAULT_MODE if default_mode is None else default_mode
    errors: list[str] = []
    payload: dict[str, FileProjection] = {}
    for item in items:
        data = b""
        try:
            if item.get("fieldRef"):
                data = extract_field_path(pod, item["fieldRef"].get("fieldPath") or "").encode()
            elif item.get("resourceFieldRef"):
                ref = item["resourceFieldRef"]
                container = find_container(pod, ref.get("containerName") or "")
                data = container_resource_value(ref, container, allocatable).encode()
        except SourceError as err:
            errors.append(str(err))
        mode = item.get("mode")
        payload[clean_path(item.get("path") or "")] = FileProjection(data, mode_default if mode is None else mode)
    if errors:
        raise SourceError(aggregate(errors))
    return payload
