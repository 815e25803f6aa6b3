"""Field validation as upstream prints it (k8s.io/apimachinery util/validation, api/validation).

Two layers, mirroring upstream:

* ``is_*`` checks take a string and return a list of human-readable problems (empty when valid),
  word for word as ``validation.IsDNS1123Subdomain`` and friends.
* ``validate_*`` functions return :class:`~pocketkube.api.errors.Cause` lists whose ``message`` is
  upstream's ``field.Error.ErrorBody()`` (e.g. ``Invalid value: "Foo_": a lowercase RFC 1123 ...``),
  so ``errors.invalid()`` renders the same 422 text kube-apiserver does.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from pocketkube.api.errors import Cause

# field.ErrorType values (metav1.CauseType).
FIELD_VALUE_INVALID = "FieldValueInvalid"
FIELD_VALUE_REQUIRED = "FieldValueRequired"
FIELD_VALUE_TOO_LONG = "FieldValueTooLong"
FIELD_VALUE_NOT_SUPPORTED = "FieldValueNotSupported"
FIELD_VALUE_FORBIDDEN = "FieldValueForbidden"
FIELD_VALUE_DUPLICATE = "FieldValueDuplicate"
FIELD_VALUE_NOT_FOUND = "FieldValueNotFound"
FIELD_VALUE_TOO_MANY = "FieldValueTooMany"


# --------------------------------------------------------------------------------------------
# Rendering bad values the way Go's field.Error.ErrorBody() does.

_GO_ESCAPES = {"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t",
               "\v": r"\v", "\\": "\\\\", '"': '\\"'}


def go_quote(s: str) -> str:
    """strconv.Quote: Go's %q, which escapes differently from JSON (\\x07, \\u00a0, ...)."""
    out = ['"']
    for ch in s:
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable():  # same classes as unicode.IsPrint: L, M, N, P, S and ASCII space
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def go_json(value: Any) -> str:
    """encoding/json.Marshal output: compact, with Go's HTML-safe escapes.

    Dicts keep their insertion order (callers pass Go structs in field order; Go maps sorted).
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def render_value(value: Any) -> str:
    """How ErrorBody prints a BadValue: %q for strings, %v for numbers/bools, JSON otherwise."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return go_quote(value)
    return go_json(value)


# --------------------------------------------------------------------------------------------
# Cause constructors (field.Invalid, field.Required, ...).

def _with_detail(head: str, detail: str) -> str:
    return f"{head}: {detail}" if detail else head


def required(path: str, detail: str = "") -> Cause:
    return Cause(path, _with_detail("Required value", detail), FIELD_VALUE_REQUIRED)


def invalid_value(path: str, value: Any, detail: str = "") -> Cause:
    return Cause(path, _with_detail(f"Invalid value: {render_value(value)}", detail), FIELD_VALUE_INVALID)


def not_supported(path: str, value: Any, allowed: Iterable[str]) -> Cause:
    quoted = [go_quote(str(v)) for v in allowed]
    detail = "supported values: " + ", ".join(quoted) if quoted else ""
    return Cause(path, _with_detail(f"Unsupported value: {render_value(value)}", detail),
                 FIELD_VALUE_NOT_SUPPORTED)


def too_long(path: str, max_length: int) -> Cause:
    if max_length >= 0:
        detail = f"may not be more than {max_length} {'byte' if max_length == 1 else 'bytes'}"
    else:
        detail = "value is too long"
    return Cause(path, f"Too long: {detail}", FIELD_VALUE_TOO_LONG)


def too_many(path: str, actual: int, max_items: int) -> Cause:
    head = f"Too many: {actual}" if actual >= 0 else "Too many"
    if max_items >= 0:
        detail = f"must have at most {max_items} {'item' if max_items == 1 else 'items'}"
    else:
        detail = "has too many items"
    return Cause(path, f"{head}: {detail}", FIELD_VALUE_TOO_MANY)


def forbidden(path: str, detail: str = "") -> Cause:
    return Cause(path, _with_detail("Forbidden", detail), FIELD_VALUE_FORBIDDEN)


def duplicate(path: str, value: Any) -> Cause:
    return Cause(path, f"Duplicate value: {render_value(value)}", FIELD_VALUE_DUPLICATE)


def not_found(path: str, value: Any) -> Cause:
    return Cause(path, f"Not found: {render_value(value)}", FIELD_VALUE_NOT_FOUND)


def cause_text(cause: Cause) -> str:
    """field.Error.Error(): ``<field>: <body>``."""
    return f"{cause.field}: {cause.message}"


def child(path: str | None, name: str) -> str:
    """field.Path.Child; ``None`` is Go's nil path (a root-less child)."""
    return name if not path else f"{path}.{name}"


# --------------------------------------------------------------------------------------------
# String checks (validation.Is*). Upstream has two MaxLenError wordings: the older
# util/validation one ("characters", used for names) and the newer api/validate/content one
# ("bytes", used for label keys/values). Both are kept so messages match byte for byte.

def max_len_error(length: int) -> str:
    return f"must be no more than {length} characters"


def _content_max_len_error(length: int) -> str:
    return f"must be no more than {length} bytes"


def regex_error(msg: str, fmt: str, *examples: str) -> str:
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {shown}regex used for validation is '{fmt}')"


def empty_error() -> str:
    return "must be non-empty"


def inclusive_range_error(lo: int, hi: int) -> str:
    return f"must be between {lo} and {hi}, inclusive"


def _blen(value: str) -> int:
    return len(value.encode())  # Go's len() counts bytes


def _match(pattern: re.Pattern[str], value: str) -> bool:
    return pattern.fullmatch(value) is not None  # fullmatch: Go's `$` never matches before "\n"


DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL_ERR = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
                     "and must start and end with an alphanumeric character")
DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_FMT = DNS1123_LABEL_FMT + "(\\." + DNS1123_LABEL_FMT + ")*"
DNS1123_SUBDOMAIN_ERR = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                         "'-' or '.', and must start and end with an alphanumeric character")
DNS1123_SUBDOMAIN_MAX = 253
DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
DNS1035_LABEL_ERR = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
                     "start with an alphabetic character, and end with an alphanumeric character")
DNS1035_LABEL_MAX = 63
WILDCARD_DNS1123_SUBDOMAIN_FMT = "\\*\\." + DNS1123_SUBDOMAIN_FMT
WILDCARD_DNS1123_SUBDOMAIN_ERR = ("a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS "
                                  "subdomain, which must consist of lower case alphanumeric characters, '-' or "
                                  "'.' and end with an alphanumeric character")
LABEL_KEY_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
LABEL_KEY_ERR = ("must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                 "alphanumeric character")
LABEL_KEY_MAX = 63
LABEL_VALUE_FMT = "(" + LABEL_KEY_FMT + ")?"
LABEL_VALUE_ERR = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
                   "'.', and must start and end with an alphanumeric character")
LABEL_VALUE_MAX = 63
C_IDENTIFIER_FMT = "[A-Za-z_][A-Za-z0-9_]*"
C_IDENTIFIER_ERR = ("a valid C identifier must start with alphabetic character or '_', followed by a string "
                    "of alphanumeric characters or '_'")
ENV_VAR_NAME_FMT = "[-._a-zA-Z][-._a-zA-Z0-9]*"
ENV_VAR_NAME_ERR = ("a valid environment variable name must consist of alphabetic characters, digits, '_', "
                    "'-', or '.', and must not start with a digit")
CONFIG_MAP_KEY_FMT = "[-._a-zA-Z0-9]+"
CONFIG_MAP_KEY_ERR = "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
PERCENT_FMT = "[0-9]+%"
PERCENT_ERR = "a valid percent string must be a numeric string followed by an ending '%'"
HTTP_HEADER_NAME_FMT = "[-A-Za-z0-9]+"
HTTP_HEADER_NAME_ERR = "a valid HTTP header must consist of alphanumeric characters or '-'"

_dns1123_label_re = re.compile(DNS1123_LABEL_FMT)
_dns1123_subdomain_re = re.compile(DNS1123_SUBDOMAIN_FMT)
_dns1035_label_re = re.compile(DNS1035_LABEL_FMT)
_wildcard_re = re.compile(WILDCARD_DNS1123_SUBDOMAIN_FMT)
_label_key_re = re.compile(LABEL_KEY_FMT)
_label_value_re = re.compile(LABEL_VALUE_FMT)
_c_identifier_re = re.compile(C_IDENTIFIER_FMT)
_env_var_re = re.compile(ENV_VAR_NAME_FMT)
_config_map_key_re = re.compile(CONFIG_MAP_KEY_FMT)
_percent_re = re.compile(PERCENT_FMT)
_http_header_re = re.compile(HTTP_HEADER_NAME_FMT)
_port_name_charset_re = re.compile("[-a-z0-9]+")
_port_name_letter_re = re.compile("[a-z]")


def is_dns1123_label(value: str) -> list[str]:
    errs: list[str] = []
    if _blen(value) > DNS1123_LABEL_MAX:
        errs.append(max_len_error(DNS1123_LABEL_MAX))
    if not _match(_dns1123_label_re, value):
        if _match(_dns1123_subdomain_re, value):
            errs.append("must not contain dots")
        else:
            errs.append(regex_error(DNS1123_LABEL_ERR, DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    return _dns1123_subdomain(value, max_len_error)


def _dns1123_subdomain(value: str, len_error: Callable[[int], str]) -> list[str]:
    errs: list[str] = []
    if _blen(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(len_error(DNS1123_SUBDOMAIN_MAX))
    if not _match(_dns1123_subdomain_re, value):
        errs.append(regex_error(DNS1123_SUBDOMAIN_ERR, DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def is_dns1035_label(value: str) -> list[str]:
    errs: list[str] = []
    if _blen(value) > DNS1035_LABEL_MAX:
        errs.append(max_len_error(DNS1035_LABEL_MAX))
    if not _match(_dns1035_label_re, value):
        errs.append(regex_error(DNS1035_LABEL_ERR, DNS1035_LABEL_FMT, "my-name", "abc-123"))
    return errs


def is_wildcard_dns1123_subdomain(value: str) -> list[str]:
    errs: list[str] = []
    if _blen(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(max_len_error(DNS1123_SUBDOMAIN_MAX))
    if not _match(_wildcard_re, value):
        errs.append(regex_error(WILDCARD_DNS1123_SUBDOMAIN_ERR, WILDCARD_DNS1123_SUBDOMAIN_FMT, "*.example.com"))
    return errs


def is_qualified_name(value: str) -> list[str]:
    """content.IsLabelKey: ``[prefix/]name``; also the rule for annotation keys and finalizers."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part " + empty_error())
        else:
            errs.extend("prefix part " + m for m in _dns1123_subdomain(prefix, _content_max_len_error))
    else:
        return [
            "a valid label key " + regex_error(LABEL_KEY_ERR, LABEL_KEY_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part " + empty_error())
    elif _blen(name) > LABEL_KEY_MAX:
        errs.append("name part " + _content_max_len_error(LABEL_KEY_MAX))
    if not _match(_label_key_re, name):
        errs.append("name part " + regex_error(LABEL_KEY_ERR, LABEL_KEY_FMT, "MyName", "my.name", "123-abc"))
    return errs


is_label_key = is_qualified_name


def is_label_value(value: str) -> list[str]:
    errs: list[str] = []
    if _blen(value) > LABEL_VALUE_MAX:
        errs.append(_content_max_len_error(LABEL_VALUE_MAX))
    if not _match(_label_value_re, value):
        errs.append(regex_error(LABEL_VALUE_ERR, LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errs


def is_c_identifier(value: str) -> list[str]:
    if not _match(_c_identifier_re, value):
        return [regex_error(C_IDENTIFIER_ERR, C_IDENTIFIER_FMT, "my_name", "MY_NAME", "MyName")]
    return []


def _has_chdir_prefix(value: str) -> list[str]:
    if value == ".":
        return ["must not be '.'"]
    if value == "..":
        return ["must not be '..'"]
    if value.startswith(".."):
        return ["must not start with '..'"]
    return []


def is_env_var_name(value: str) -> list[str]:
    errs: list[str] = []
    if not _match(_env_var_re, value):
        errs.append(regex_error(ENV_VAR_NAME_ERR, ENV_VAR_NAME_FMT, "my.env-name", "MY_ENV.NAME", "MyEnvName1"))
    return errs + _has_chdir_prefix(value)


def is_relaxed_env_var_name(value: str) -> list[str]:
    errs: list[str] = []
    if not value:
        errs.append("environment variable name " + empty_error())
    if any(ord(c) > 0x7F or not c.isprintable() or c == "=" for c in value):
        errs.append("a valid environment variable name must consist only of printable ASCII characters "
                    "other than '='")
    return errs


def is_config_map_key(value: str) -> list[str]:
    errs: list[str] = []
    if _blen(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(max_len_error(DNS1123_SUBDOMAIN_MAX))
    if not _match(_config_map_key_re, value):
        errs.append(regex_error(CONFIG_MAP_KEY_ERR, CONFIG_MAP_KEY_FMT, "key.name", "KEY_NAME", "key-name"))
    return errs + _has_chdir_prefix(value)


def is_valid_percent(value: str) -> list[str]:
    if not _match(_percent_re, value):
        return [regex_error(PERCENT_ERR, PERCENT_FMT, "1%", "93%")]
    return []


def is_http_header_name(value: str) -> list[str]:
    if not _match(_http_header_re, value):
        return [regex_error(HTTP_HEADER_NAME_ERR, HTTP_HEADER_NAME_FMT, "X-Header-Name")]
    return []


def is_valid_port_num(port: int) -> list[str]:
    return [] if 1 <= port <= 65535 else [inclusive_range_error(1, 65535)]


def is_in_range(value: int, lo: int, hi: int) -> list[str]:
    return [] if lo <= value <= hi else [inclusive_range_error(lo, hi)]


def is_valid_user_id(uid: int) -> list[str]:
    return is_in_range(uid, 0, 2**31 - 1)


def is_valid_group_id(gid: int) -> list[str]:
    return is_in_range(gid, 0, 2**31 - 1)


def is_valid_port_name(port: str) -> list[str]:
    errs: list[str] = []
    if _blen(port) > 15:
        errs.append(max_len_error(15))
    if not _match(_port_name_charset_re, port):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not _port_name_letter_re.search(port):
        errs.append("must contain at least one letter (a-z)")
    if "--" in port:
        errs.append("must not contain consecutive hyphens")
    if port and (port[0] == "-" or port[-1] == "-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def is_path_segment_name(name: str) -> list[str]:
    if name in (".", ".."):
        return [f"may not be '{name}'"]
    return is_path_segment_prefix(name)


def is_path_segment_prefix(name: str) -> list[str]:
    return [f"may not contain '{c}'" for c in ("/", "%") if c in name]


def is_decimal_integer(value: str) -> list[str]:
    """content.IsDecimalInteger: canonical base-10 integer (no '+', no leading zeros, no '-0')."""
    if not value:
        return [empty_error()]
    if re.fullmatch(r"0|-?[1-9][0-9]*", value, re.ASCII) is None:
        return ["must be a valid decimal integer in canonical form"]
    return []


# --- IP addresses and CIDRs (util/validation/ip.go). Go's "sloppy" parsers accept IPv4 octets with
# leading zeros; strict validation then reports them, so we emulate both parsers.

_V4_SLOPPY = re.compile(r"([0-9]+)\.([0-9]+)\.([0-9]+)\.([0-9]+)", re.ASCII)


def _parse_ip_sloppy(value: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address | None, bool]:
    """Returns (address, strictly_valid). Go's parsers reject zones, so '%' is refused outright."""
    if "%" in value or not value.isascii():
        return None, False
    try:
        return ipaddress.ip_address(value), True
    except ValueError:
        pass
    # Retry with leading zeros stripped from a (possibly embedded) dotted-quad.
    head, sep, tail = value.rpartition(":")
    m = _V4_SLOPPY.fullmatch(tail)
    if m is None or any(int(g) > 255 for g in m.groups()):
        return None, False
    try:
        return ipaddress.ip_address(head + sep + ".".join(str(int(g)) for g in m.groups())), False
    except ValueError:
        return None, False


def _go_ip_string(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)  # net.IP.String prints 4-in-6 addresses as plain IPv4
    return str(ip)


def is_valid_ip(path: str, value: str) -> list[Cause]:
    ip, strict = _parse_ip_sloppy(value)
    if ip is None:
        return [invalid_value(path, value, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")]
    errs: list[Cause] = []
    if not strict:
        errs.append(invalid_value(path, value, "must not have leading 0s"))
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        errs.append(invalid_value(path, value, "must not be an IPv4-mapped IPv6 address"))
    if errs:
        return errs
    canonical = _go_ip_string(ip)
    if value != canonical:
        errs.append(invalid_value(path, value, f"must be in canonical form ({go_quote(canonical)})"))
    return errs


def is_valid_cidr(path: str, value: str) -> list[Cause]:
    addr_text, slash, bits = value.partition("/")
    ip, strict = _parse_ip_sloppy(addr_text) if slash else (None, False)
    if ip is None or not bits.isdigit() or not bits.isascii() or int(bits) > ip.max_prefixlen:
        return [invalid_value(path, value, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")]
    if not strict or (len(bits) > 1 and bits[0] == "0"):
        return [invalid_value(path, value, "must not have leading 0s in IP or prefix length")]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return [invalid_value(path, value, "must not have an IPv4-mapped IPv6 address")]
    network = ipaddress.ip_network(f"{ip}/{int(bits)}", strict=False)
    if network.network_address != ip:
        return [invalid_value(path, value, "must not have bits set beyond the prefix length")]
    if value != str(network):
        return [invalid_value(path, value, f"must be in canonical form ({go_quote(str(network))})")]
    return []


# --------------------------------------------------------------------------------------------
# Name validators (api/validation/generic.go). Each takes (name, prefix): prefix=True when the
# value is a generateName that will get a random suffix, so a trailing dash is allowed.

NameValidator = Callable[[str, bool], list[str]]


def _mask_trailing_dash(name: str) -> str:
    # Upstream drops the last two characters (not one) before appending "a"; kept as is.
    if len(name) > 1 and name.endswith("-"):
        return name[:-2] + "a"
    return name


def name_is_dns_subdomain(name: str, prefix: bool) -> list[str]:
    return is_dns1123_subdomain(_mask_trailing_dash(name) if prefix else name)


def name_is_dns_label(name: str, prefix: bool) -> list[str]:
    return is_dns1123_label(_mask_trailing_dash(name) if prefix else name)


def name_is_dns1035_label(name: str, prefix: bool) -> list[str]:
    return is_dns1035_label(_mask_trailing_dash(name) if prefix else name)


def name_is_path_segment(name: str, prefix: bool) -> list[str]:
    return is_path_segment_prefix(name) if prefix else is_path_segment_name(name)


def name_any(name: str, prefix: bool) -> list[str]:
    """For kinds that accept any name (e.g. CertificateSigningRequest)."""
    return []


NAME_VALIDATORS: dict[str, NameValidator] = {
    "dns1123subdomain": name_is_dns_subdomain,
    "dns1123label": name_is_dns_label,
    "dns1035label": name_is_dns1035_label,
    "path segment": name_is_path_segment,
    "any": name_any,
}


# --------------------------------------------------------------------------------------------
# ObjectMeta validation (api/validation/objectmeta.go plus core's finalizer-name rule).

FIELD_IMMUTABLE_ERROR_MSG = "field is immutable"
IS_NEGATIVE_ERROR_MSG = "must be greater than or equal to 0"
TOTAL_ANNOTATION_SIZE_LIMIT_B = 256 * (1 << 10)
FIELD_MANAGER_MAX_LENGTH = 128
MAX_SUBRESOURCE_NAME_LENGTH = 256
FINALIZER_ORPHAN_DEPENDENTS = "orphan"
FINALIZER_DELETE_DEPENDENTS = "foregroundDeletion"
# Finalizers that may be written without a domain prefix (core helper.IsStandardFinalizerName).
STANDARD_FINALIZERS = frozenset({"kubernetes", FINALIZER_ORPHAN_DEPENDENTS, FINALIZER_DELETE_DEPENDENTS})
# Kinds that may never own anything (BannedOwners): group, version, kind.
BANNED_OWNERS = frozenset({("", "v1", "Event")})


def _as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def validate_label_name(name: str, path: str) -> list[Cause]:
    return [invalid_value(path, name, msg) for msg in is_qualified_name(name)]


def validate_labels(labels: Mapping[str, Any] | None, path: str) -> list[Cause]:
    """metav1 validation.ValidateLabels: errors are reported on the map, not on the key."""
    errs: list[Cause] = []
    labels = _as_map(labels)
    for key in sorted(labels):
        value = _str(labels[key])
        errs.extend(validate_label_name(key, path))
        errs.extend(invalid_value(path, value, msg) for msg in is_label_value(value))
    return errs


def validate_annotations(annotations: Mapping[str, Any] | None, path: str) -> list[Cause]:
    errs: list[Cause] = []
    annotations = _as_map(annotations)
    for key in sorted(annotations):
        # Same as a qualified name except case does not matter.
        errs.extend(invalid_value(path, key, msg) for msg in is_qualified_name(key.lower()))
    total = sum(_blen(k) + _blen(_str(v)) for k, v in annotations.items())
    if total > TOTAL_ANNOTATION_SIZE_LIMIT_B:
        errs.append(too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT_B))
    return errs


def _parse_group_version(api_version: str) -> tuple[str, str] | None:
    """schema.ParseGroupVersion; None on error."""
    if api_version in ("", "/"):
        return "", ""
    slashes = api_version.count("/")
    if slashes == 0:
        return "", api_version
    if slashes == 1:
        group, version = api_version.split("/")
        return group, version
    return None


def _owner_reference_json(ref: Mapping[str, Any]) -> dict[str, Any]:
    """metav1.OwnerReference as Go marshals it: struct field order, omitempty pointers."""
    out: dict[str, Any] = {k: ref.get(k, "") for k in ("apiVersion", "kind", "name", "uid")}
    for k in ("controller", "blockOwnerDeletion"):
        if ref.get(k) is not None:
            out[k] = ref[k]
    return out


def validate_owner_references(refs: Any, path: str) -> list[Cause]:
    errs: list[Cause] = []
    first_controller = ""
    refs = _as_list(refs)
    for i, raw in enumerate(refs):
        ref = _as_map(raw)
        ref_path = f"{path}[{i}]"
        api_version, kind = _str(ref.get("apiVersion")), _str(ref.get("kind"))
        gv = _parse_group_version(api_version)
        if not api_version:
            errs.append(required(f"{ref_path}.apiVersion", "must not be empty"))
        elif gv is None or not gv[1]:
            errs.append(invalid_value(f"{ref_path}.apiVersion", api_version, "must be <group>/<version> or <version>"))
        if not kind:
            errs.append(required(f"{ref_path}.kind", "must not be empty"))
        if not _str(ref.get("name")):
            errs.append(required(f"{ref_path}.name", "must not be empty"))
        if not _str(ref.get("uid")):
            errs.append(required(f"{ref_path}.uid", "must not be empty"))
        group, version = gv or ("", "")
        if (group, version, kind) in BANNED_OWNERS:
            errs.append(invalid_value(ref_path, _owner_reference_json(ref),
                                      f"{group}/{version}, Kind={kind} is disallowed from being an owner"))
        if ref.get("controller") is True:
            current = f"{kind}/{_str(ref.get('name'))}"
            if first_controller:
                errs.append(invalid_value(
                    path, [_owner_reference_json(_as_map(r)) for r in refs],
                    f'Only one reference can have Controller set to true. Found "true" in references for '
                    f"{first_controller} and {current}"))
            else:
                first_controller = current
    return errs


def validate_finalizers(finalizers: Any, path: str) -> list[Cause]:
    """apimachinery ValidateFinalizers: note the errors carry the list path, not an index."""
    errs: list[Cause] = []
    names = [_str(f) for f in _as_list(finalizers)]
    for name in names:
        errs.extend(invalid_value(path, name, msg) for msg in is_qualified_name(name))
    if FINALIZER_ORPHAN_DEPENDENTS in names and FINALIZER_DELETE_DEPENDENTS in names:
        errs.append(invalid_value(path, names, f"finalizer {FINALIZER_ORPHAN_DEPENDENTS} and "
                                               f"{FINALIZER_DELETE_DEPENDENTS} cannot be both set"))
    return errs


def _validate_kube_finalizer_names(finalizers: Any, path: str) -> list[Cause]:
    """core's validateKubeFinalizerName: unprefixed finalizers must be one of the standard ones."""
    errs: list[Cause] = []
    for i, raw in enumerate(_as_list(finalizers)):
        name = _str(raw)
        if "/" not in name and name not in STANDARD_FINALIZERS:
            errs.append(invalid_value(f"{path}[{i}]", name,
                                      "name is neither a standard finalizer name nor is it fully qualified"))
    return errs


def validate_field_manager(manager: str, path: str) -> list[Cause]:
    if manager.isprintable() and len(manager) <= FIELD_MANAGER_MAX_LENGTH // 4:
        return []  # every write names one: the common case without a walk (4: most bytes per character)
    errs: list[Cause] = []
    if _blen(manager) > FIELD_MANAGER_MAX_LENGTH:
        errs.append(too_long(path, FIELD_MANAGER_MAX_LENGTH))
    offset = 0
    for ch in manager:
        if not ch.isprintable():
            # %#U prints U+XXXX plus the quoted character only when it is printable (never here).
            errs.append(invalid_value(path, manager, f"invalid character U+{ord(ch):04X} (at position {offset})"))
        offset += len(ch.encode())
    return errs


def validate_managed_fields(entries: Any, path: str) -> list[Cause]:
    errs: list[Cause] = []
    for i, raw in enumerate(_as_list(entries)):
        entry = _as_map(raw)
        entry_path = f"{path}[{i}]"
        operation = _str(entry.get("operation"))
        if not operation:
            errs.append(required(f"{entry_path}.operation", "must not be empty"))
        elif operation not in ("Apply", "Update"):
            errs.append(not_supported(f"{entry_path}.operation", operation, ["Apply", "Update"]))
        fields_type = _str(entry.get("fieldsType"))
        if fields_type and fields_type != "FieldsV1":
            errs.append(invalid_value(f"{entry_path}.fieldsType", fields_type, "must be `FieldsV1`"))
        errs.extend(validate_field_manager(_str(entry.get("manager")), f"{entry_path}.manager"))
        if _blen(_str(entry.get("subresource"))) > MAX_SUBRESOURCE_NAME_LENGTH:
            errs.append(too_long(f"{entry_path}.subresource", MAX_SUBRESOURCE_NAME_LENGTH))
    return errs


def _generation(meta: Mapping[str, Any]) -> int:
    value = meta.get("generation")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _resolve_name_validator(name_validator: str | NameValidator) -> NameValidator:
    if callable(name_validator):
        return name_validator
    try:
        return NAME_VALIDATORS[name_validator]
    except KeyError:
        raise ValueError(f"unknown name validator {name_validator!r}") from None


def validate_object_meta(meta: Mapping[str, Any] | None, namespaced: bool,
                         name_validator: str | NameValidator = "dns1123subdomain", *,
                         path: str = "metadata", kube_finalizers: bool = True) -> list[Cause]:
    """ValidateObjectMeta on create (name generation must already have happened).

    ``name_validator`` is one of NAME_VALIDATORS' keys or a ``(name, prefix) -> [problems]``
    callable. ``kube_finalizers`` applies core's rule that unprefixed finalizers must be standard
    ones; upstream applies it to built-in kinds, not to custom resources.
    """
    meta = _as_map(meta)
    validate_name = _resolve_name_validator(name_validator)
    errs: list[Cause] = []
    generate_name, name = _str(meta.get("generateName")), _str(meta.get("name"))
    if generate_name:
        errs.extend(invalid_value(f"{path}.generateName", generate_name, msg)
                    for msg in validate_name(generate_name, True))
    if not name:
        errs.append(required(f"{path}.name", "name or generateName is required"))
    else:
        errs.extend(invalid_value(f"{path}.name", name, msg) for msg in validate_name(name, False))
    namespace = _str(meta.get("namespace"))
    if namespaced:
        if not namespace:
            errs.append(required(f"{path}.namespace"))
        else:
            errs.extend(invalid_value(f"{path}.namespace", namespace, msg)
                        for msg in name_is_dns_label(namespace, False))
    elif namespace:
        errs.append(forbidden(f"{path}.namespace", "not allowed on this type"))
    if _generation(meta) < 0:
        errs.append(invalid_value(f"{path}.generation", _generation(meta), IS_NEGATIVE_ERROR_MSG))
    errs.extend(validate_labels(meta.get("labels"), f"{path}.labels"))
    errs.extend(validate_annotations(meta.get("annotations"), f"{path}.annotations"))
    errs.extend(validate_owner_references(meta.get("ownerReferences"), f"{path}.ownerReferences"))
    errs.extend(validate_finalizers(meta.get("finalizers"), f"{path}.finalizers"))
    errs.extend(validate_managed_fields(meta.get("managedFields"), f"{path}.managedFields"))
    if kube_finalizers:
        errs.extend(_validate_kube_finalizer_names(meta.get("finalizers"), f"{path}.finalizers"))
    return errs


def _timestamp(value: Any) -> Any:
    """metav1.Time compares by instant; normalise RFC 3339 strings so 'Z' equals '+00:00'."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def _immutable(new: Any, old: Any, path: str, normalise: Callable[[Any], Any] = lambda v: v) -> list[Cause]:
    if normalise(new) != normalise(old):
        return [invalid_value(path, new, FIELD_IMMUTABLE_ERROR_MSG)]
    return []


def validate_object_meta_update(new_meta: Mapping[str, Any] | None, old_meta: Mapping[str, Any] | None, *,
                                path: str = "metadata", kube_finalizers: bool = True) -> list[Cause]:
    """ValidateObjectMetaUpdate (plus core's finalizer-name rule on the new finalizers)."""
    new, old = _as_map(new_meta), _as_map(old_meta)
    errs: list[Cause] = []
    if old.get("deletionTimestamp"):
        old_finalizers = {_str(f) for f in _as_list(old.get("finalizers"))}
        extra = sorted({_str(f) for f in _as_list(new.get("finalizers"))} - old_finalizers)
        if extra:
            listed = ", ".join(go_quote(f) for f in extra)
            errs.append(forbidden(f"{path}.finalizers", "no new finalizers can be added if the object is being "
                                                        f"deleted, found new finalizers []string{{{listed}}}"))
    if not _str(new.get("resourceVersion")):
        errs.append(invalid_value(f"{path}.resourceVersion", _str(new.get("resourceVersion")),
                                  "must be specified for an update"))
    if _generation(new) < 0:
        errs.append(invalid_value(f"{path}.generation", _generation(new), IS_NEGATIVE_ERROR_MSG))
    if _generation(new) < _generation(old):
        errs.append(invalid_value(f"{path}.generation", _generation(new), "must not be decremented"))
    errs.extend(_immutable(_str(new.get("name")), _str(old.get("name")), f"{path}.name"))
    errs.extend(_immutable(_str(new.get("namespace")), _str(old.get("namespace")), f"{path}.namespace"))
    errs.extend(_immutable(_str(new.get("uid")), _str(old.get("uid")), f"{path}.uid"))
    errs.extend(_immutable(new.get("creationTimestamp"), old.get("creationTimestamp"),
                           f"{path}.creationTimestamp", _timestamp))
    errs.extend(_immutable(new.get("deletionTimestamp"), old.get("deletionTimestamp"),
                           f"{path}.deletionTimestamp", _timestamp))
    errs.extend(_immutable(new.get("deletionGracePeriodSeconds"), old.get("deletionGracePeriodSeconds"),
                           f"{path}.deletionGracePeriodSeconds"))
    errs.extend(validate_labels(new.get("labels"), f"{path}.labels"))
    errs.extend(validate_annotations(new.get("annotations"), f"{path}.annotations"))
    errs.extend(validate_owner_references(new.get("ownerReferences"), f"{path}.ownerReferences"))
    errs.extend(validate_managed_fields(new.get("managedFields"), f"{path}.managedFields"))
    if kube_finalizers:
        errs.extend(_validate_kube_finalizer_names(new.get("finalizers"), f"{path}.finalizers"))
    return errs
