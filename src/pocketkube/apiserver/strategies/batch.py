"""batch/v1 Job and CronJob (pkg/apis/batch/v1/defaults.go, pkg/apis/batch/validation, pkg/registry/batch)."""

from __future__ import annotations

import zoneinfo
from typing import Any

from pocketkube.api import validation as v
from pocketkube.api.cron import ScheduleError, parse_schedule
from pocketkube.api.errors import Cause, invalid
from pocketkube.api.selectors import validate_label_selector
from pocketkube.apiserver.strategy import FieldGetter, Obj, Strategy

from . import _fields as f
from . import podspec

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
LEGACY_JOB_NAME_LABEL = "job-name"
LEGACY_CONTROLLER_UID_LABEL = "controller-uid"
JOB_RESTART_POLICIES = ["OnFailure", "Never"]
MAX_INT32 = 2**31 - 1
# A CronJob's name gets an 11-character suffix for its Jobs, which must fit in 63.
CRONJOB_NAME_MAX = 52


def _spec(obj: Obj) -> Obj:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def default_job_spec(spec: Obj) -> None:
    """SetDefaults_Job for the spec (shared with a CronJob's jobTemplate)."""
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    if spec.get("parallelism") is None:
        spec["parallelism"] = 1
    if spec.get("backoffLimit") is None:
        # With a per-index limit the global one is effectively unlimited.
        spec["backoffLimit"] = MAX_INT32 if spec.get("backoffLimitPerIndex") is not None else 6
    if spec.get("completionMode") is None:
        spec["completionMode"] = "NonIndexed"
    if spec.get("suspend") is None:
        spec["suspend"] = False
    if spec.get("podReplacementPolicy") is None:
        spec["podReplacementPolicy"] = "Failed" if spec.get("podFailurePolicy") is not None else "TerminatingOrFailed"
    podspec.default_pod_template(spec.get("template"))


def validate_job_spec(spec: Obj, path: str, *, generated_selector: bool) -> list[Cause]:
    errs: list[Cause] = []
    for key in ("parallelism", "completions", "backoffLimit", "activeDeadlineSeconds",
                "ttlSecondsAfterFinished", "backoffLimitPerIndex", "maxFailedIndexes"):
        errs.extend(f.non_negative(spec.get(key), f"{path}.{key}"))
    deadline = spec.get("activeDeadlineSeconds")
    if isinstance(deadline, int) and deadline == 0:
        errs.append(v.invalid_value(f"{path}.activeDeadlineSeconds", deadline, "must be greater than 0"))
    mode = spec.get("completionMode")
    if mode is not None and mode not in ("NonIndexed", "Indexed"):
        errs.append(v.not_supported(f"{path}.completionMode", mode, ["NonIndexed", "Indexed"]))
    if mode == "Indexed" and spec.get("completions") is None:
        errs.append(v.required(f"{path}.completions", "when completion mode is Indexed"))
    policy = spec.get("podReplacementPolicy")
    if policy is not None and policy not in ("TerminatingOrFailed", "Failed"):
        errs.append(v.not_supported(f"{path}.podReplacementPolicy", policy, ["TerminatingOrFailed", "Failed"]))
    selector = spec.get("selector")
    template = spec.get("template")
    if selector is None:
        if not generated_selector:
            errs.append(v.required(f"{path}.selector"))
    else:
        errs.extend(validate_label_selector(selector, f"{path}.selector"))
        labels = podspec.template_labels(template)
        if not f.selector_matches(selector, labels):
            errs.append(v.invalid_value(f"{path}.template.metadata.labels", labels,
                                        "`selector` does not match template `labels`"))
    if template is None:
        errs.append(v.required(f"{path}.template"))
    else:
        errs.extend(podspec.validate_pod_template(template, f"{path}.template"))
        restart = (template.get("spec") or {}).get("restartPolicy")
        if restart not in JOB_RESTART_POLICIES:
            errs.append(v.not_supported(f"{path}.template.spec.restartPolicy", restart, JOB_RESTART_POLICIES))
    return errs


class JobStrategy(Strategy):
    tracks_generation = True
    name_validator = "dns1123subdomain"

    def field_getters(self) -> dict[str, FieldGetter]:
        getters = super().field_getters()
        getters["status.successful"] = lambda obj: str((obj.get("status") or {}).get("succeeded", 0))
        return getters

    def default(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        if not isinstance(spec, dict):
            return
        default_job_spec(spec)
        labels = podspec.template_labels(spec.get("template"))
        meta = obj.setdefault("metadata", {})
        if labels and not meta.get("labels"):
            meta["labels"] = labels

    @staticmethod
    def _manual(obj: Obj) -> bool:
        return _spec(obj).get("manualSelector") is True

    def validate(self, obj: Obj) -> list[Cause]:
        # Without manualSelector the selector is generated in before_create, once the uid exists.
        return validate_job_spec(_spec(obj), "spec", generated_selector=not self._manual(obj))

    async def before_create(self, obj: Obj) -> None:
        if self._manual(obj):
            return
        meta = obj.get("metadata") or {}
        name, uid = str(meta.get("name", "")), str(meta.get("uid", ""))
        spec = _spec(obj)
        template = spec.setdefault("template", {})
        tmeta = template.setdefault("metadata", {})
        labels = tmeta.get("labels") or {}
        for key in (LEGACY_JOB_NAME_LABEL, JOB_NAME_LABEL):
            labels.setdefault(key, name)
        for key in (LEGACY_CONTROLLER_UID_LABEL, CONTROLLER_UID_LABEL):
            labels.setdefault(key, uid)
        tmeta["labels"] = labels
        selector = spec.get("selector") or {}
        match_labels = selector.get("matchLabels") or {}
        match_labels.setdefault(CONTROLLER_UID_LABEL, uid)
        selector["matchLabels"] = match_labels
        spec["selector"] = selector
        errs = self._validate_generated(obj, uid)
        if errs:
            raise invalid(self.info.kind, name, self.info.group, errs)

    @staticmethod
    def _validate_generated(obj: Obj, uid: str) -> list[Cause]:
        """validateGeneratedSelector: a user-set label must not contradict the generated ones."""
        spec = _spec(obj)
        labels = podspec.template_labels(spec.get("template"))
        errs: list[Cause] = []
        for key in (LEGACY_CONTROLLER_UID_LABEL, CONTROLLER_UID_LABEL):
            if labels.get(key) != uid:
                errs.append(v.invalid_value(f"spec.template.metadata.labels[{key}]", labels.get(key),
                                            f"must be '{uid}'"))
        match_labels = (spec.get("selector") or {}).get("matchLabels") or {}
        if match_labels.get(CONTROLLER_UID_LABEL) != uid:
            errs.append(v.invalid_value(f"spec.selector.matchLabels[{CONTROLLER_UID_LABEL}]",
                                        match_labels.get(CONTROLLER_UID_LABEL), f"must be '{uid}'"))
        if not errs and not f.selector_matches(spec.get("selector"), labels):
            errs.append(v.invalid_value("spec.template.metadata.labels", labels,
                                        "`selector` does not match template `labels`"))
        return errs

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        ns, os_ = _spec(new), _spec(old)
        errs = validate_job_spec(ns, "spec", generated_selector=False)
        errs += f.check_immutable(ns.get("selector"), os_.get("selector"), "spec.selector")
        for key in ("completionMode", "podFailurePolicy", "backoffLimitPerIndex", "managedBy", "successPolicy"):
            errs += f.check_immutable(ns.get(key), os_.get(key), f"spec.{key}")
        if ns.get("completionMode") != "Indexed" or ns.get("completions") != ns.get("parallelism"):
            # Elastic Indexed Jobs may scale completions together with parallelism; nothing else may.
            errs += f.check_immutable(ns.get("completions"), os_.get("completions"), "spec.completions")
        errs += self._validate_template_update(new, old)
        return errs

    @staticmethod
    def _validate_template_update(new: Obj, old: Obj) -> list[Cause]:
        """The template is immutable, except scheduling directives of a suspended Job that never started."""
        new_t, old_t = _spec(new).get("template") or {}, _spec(old).get("template") or {}
        if new_t == old_t:
            return []
        suspended_unstarted = _spec(old).get("suspend") is True and not (old.get("status") or {}).get("startTime")
        if suspended_unstarted:
            mutable = ("nodeSelector", "tolerations", "affinity", "schedulingGates")
            strip = {k: val for k, val in (new_t.get("spec") or {}).items() if k not in mutable}
            strip_old = {k: val for k, val in (old_t.get("spec") or {}).items() if k not in mutable}
            nm = {k: val for k, val in (new_t.get("metadata") or {}).items() if k not in ("labels", "annotations")}
            om = {k: val for k, val in (old_t.get("metadata") or {}).items() if k not in ("labels", "annotations")}
            if strip == strip_old and nm == om:
                return []
        return [v.invalid_value("spec.template", new_t, "field is immutable")]


def cron_schedule_error(schedule: str) -> str | None:
    """The robfig/cron standard parser's error for a schedule, or None when it parses."""
    try:
        parse_schedule(schedule, "UTC")
    except ScheduleError as err:
        return str(err)
    return None


class CronJobStrategy(Strategy):
    tracks_generation = True
    name_validator = "dns1123subdomain"

    def default(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        if not isinstance(spec, dict):
            return
        if not spec.get("concurrencyPolicy"):
            spec["concurrencyPolicy"] = "Allow"
        if spec.get("suspend") is None:
            spec["suspend"] = False
        if spec.get("successfulJobsHistoryLimit") is None:
            spec["successfulJobsHistoryLimit"] = 3
        if spec.get("failedJobsHistoryLimit") is None:
            spec["failedJobsHistoryLimit"] = 1
        job_template = spec.get("jobTemplate")
        if isinstance(job_template, dict):
            default_job_spec(job_template.setdefault("spec", {}))

    def validate(self, obj: Obj) -> list[Cause]:
        spec = _spec(obj)
        errs: list[Cause] = []
        name = str((obj.get("metadata") or {}).get("name") or "")
        if len(name) > CRONJOB_NAME_MAX:
            errs.append(v.invalid_value("metadata.name", name,
                                        f"must be no more than {CRONJOB_NAME_MAX} characters"))
        schedule = spec.get("schedule") or ""
        if not schedule:
            errs.append(v.required("spec.schedule"))
        elif "TZ" in schedule:
            errs.append(v.invalid_value("spec.schedule", schedule,
                                        "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"))
        else:
            problem = cron_schedule_error(schedule)
            if problem:
                errs.append(v.invalid_value("spec.schedule", schedule, problem))
        errs += self._validate_time_zone(spec.get("timeZone"))
        policy = spec.get("concurrencyPolicy") or ""
        allowed = ["Allow", "Forbid", "Replace"]
        if not policy:
            errs.append(v.required("spec.concurrencyPolicy"))
        elif policy not in allowed:
            errs.append(v.not_supported("spec.concurrencyPolicy", policy, allowed))
        for key in ("startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
            errs += f.non_negative(spec.get(key), f"spec.{key}")
        job_template = spec.get("jobTemplate")
        if not isinstance(job_template, dict):
            errs.append(v.required("spec.jobTemplate"))
        else:
            tmeta = job_template.get("metadata") or {}
            errs += v.validate_labels(tmeta.get("labels"), "spec.jobTemplate.metadata.labels")
            errs += v.validate_annotations(tmeta.get("annotations"), "spec.jobTemplate.metadata.annotations")
            job_spec = job_template.get("spec") or {}
            if job_spec.get("manualSelector") is True:
                errs.append(v.not_supported("spec.jobTemplate.spec.manualSelector", True, ["nil", "false"]))
            errs += validate_job_spec(job_spec, "spec.jobTemplate.spec", generated_selector=True)
        return errs

    @staticmethod
    def _validate_time_zone(tz: Any) -> list[Cause]:
        if tz is None:
            return []
        if not isinstance(tz, str) or not tz or tz == "Local":
            return [v.invalid_value("spec.timeZone", tz, f"unknown time zone {tz}")]
        if " " in tz or tz.startswith("/"):
            return [v.invalid_value("spec.timeZone", tz, "unknown time zone " + tz)]
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return [v.invalid_value("spec.timeZone", tz, f"unknown time zone {tz}")]
        return []
