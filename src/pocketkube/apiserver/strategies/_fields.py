"""Helpers shared by the strategies on top of pocketkube.api.validation: immutability, selectors,
quantities.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from pocketkube.api.errors import Cause
from pocketkube.api.quantity import Quantity, parse_quantity
from pocketkube.api.selectors import LabelSelector, SelectorError
from pocketkube.api.validation import (
    FIELD_IMMUTABLE_ERROR_MSG,
    IS_NEGATIVE_ERROR_MSG,
    inclusive_range_error,
    invalid_value,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_qualified_name,
    is_valid_port_num,
)


def check_immutable(new: Any, old: Any, path: str) -> list[Cause]:
    """apivalidation.ValidateImmutableField."""
    return [] if new == old else [invalid_value(path, new, FIELD_IMMUTABLE_ERROR_MSG)]


def non_negative(value: Any, path: str) -> list[Cause]:
    """apivalidation.ValidateNonnegativeField."""
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        return [invalid_value(path, value, IS_NEGATIVE_ERROR_MSG)]
    return []


def positive(value: Any, path: str) -> list[Cause]:
    if isinstance(value, int) and not isinstance(value, bool) and value <= 0:
        return [invalid_value(path, value, "must be greater than zero")]
    return []


def port_num_errors(port: Any) -> list[str]:
    """validation.IsValidPortNum for a value that may not even be an integer."""
    if isinstance(port, int) and not isinstance(port, bool):
        return is_valid_port_num(port)
    return [inclusive_range_error(1, 65535)]


def dns_label_causes(value: str, path: str) -> list[Cause]:
    return [invalid_value(path, value, msg) for msg in is_dns1123_label(value)]


def dns_subdomain_causes(value: str, path: str) -> list[Cause]:
    return [invalid_value(path, value, msg) for msg in is_dns1123_subdomain(value)]


def qualified_name_causes(value: str, path: str) -> list[Cause]:
    return [invalid_value(path, value, msg) for msg in is_qualified_name(value)]


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """metav1.LabelSelectorAsSelector(selector).Matches(labels); a nil or malformed selector matches nothing."""
    try:
        return LabelSelector.from_dict(selector).matches(labels)
    except SelectorError:
        return False


def selector_is_empty(selector: dict[str, Any] | None) -> bool:
    return not (selector or {}).get("matchLabels") and not (selector or {}).get("matchExpressions")


# --- quantities ----------------------------------------------------------------------------------

def quantity(value: Any) -> Quantity | None:
    """A resource.Quantity from JSON (a string, or a bare number); None when it does not parse."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        return parse_quantity(str(value))
    except ValueError:
        return None


def parse_quantity_value(value: Any) -> Fraction | None:
    """The exact number a quantity stands for."""
    q = quantity(value)
    return None if q is None else q.as_fraction()
