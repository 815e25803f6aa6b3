"""node.k8s.io/v1 RuntimeClass.

Stored and validated; the kubelet does not yet pick a runtime handler from a pod's runtimeClassName.
"""

from __future__ import annotations

from pocketkube.api import validation as v
from pocketkube.api.errors import Cause
from pocketkube.apiserver.strategy import Obj, Strategy

from . import _fields as f
from ._access import as_dict, as_str


class RuntimeClassStrategy(Strategy):
    name_validator = "dns1123subdomain"

    def validate(self, obj: Obj) -> list[Cause]:
        handler = as_str(obj.get("handler"))
        errs = f.dns_label_causes(handler, "handler")
        # Overhead is checked as a container's resource limits are, under the same (odd) path.
        for name, quantity in as_dict(as_dict(obj.get("overhead")).get("podFixed")).items():
            amount = f.parse_quantity_value(quantity)
            if amount is not None and amount < 0:
                errs.append(v.invalid_value(f"overhead.limits[{name}]", quantity, v.IS_NEGATIVE_ERROR_MSG))
        scheduling = as_dict(obj.get("scheduling"))
        return errs + v.validate_labels(scheduling.get("nodeSelector"), "scheduling.nodeSelector")

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        return self.validate(new) + f.check_immutable(new.get("handler"), old.get("handler"), "handler")
