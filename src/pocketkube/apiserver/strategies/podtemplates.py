"""core/v1 PodTemplate: a stored pod template, defaulted and validated as a workload's template is."""

from __future__ import annotations

from pocketkube.api.errors import Cause
from pocketkube.apiserver.strategy import Obj, Strategy

from . import podspec


class PodTemplateStrategy(Strategy):
    # metadata.generation grows with every change to the template (the only field besides metadata).
    tracks_generation = True
    name_validator = "dns1123subdomain"

    def default(self, obj: Obj) -> None:
        # The template is a struct, never absent: an empty one still gets the pod spec's defaults.
        podspec.default_pod_template(obj.setdefault("template", {}))

    def validate(self, obj: Obj) -> list[Cause]:
        return podspec.validate_pod_template(obj.get("template") or {}, "template")
