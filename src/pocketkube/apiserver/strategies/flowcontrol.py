"""flowcontrol.apiserver.k8s.io/v1 FlowSchema and PriorityLevelConfiguration.

Stored and validated only: this server does not do API priority and fairness, and it does not create
upstream's mandatory and suggested configuration objects.
"""

from __future__ import annotations

from typing import Any

from pocketkube.api import validation as v
from pocketkube.api.errors import Cause
from pocketkube.apiserver.strategy import Obj, Strategy

from ._access import as_dict, as_int, as_list, as_str, spec_of

DEFAULT_MATCHING_PRECEDENCE = 1000
MAX_MATCHING_PRECEDENCE = 10000
DEFAULT_NOMINAL_CONCURRENCY_SHARES = 30
DEFAULT_QUEUES, DEFAULT_HAND_SIZE, DEFAULT_QUEUE_LENGTH_LIMIT = 64, 8, 50
DISTINGUISHER_METHODS = ["ByNamespace", "ByUser"]
SUBJECT_KINDS = ["Group", "ServiceAccount", "User"]
PRIORITY_LEVEL_TYPES = ["Exempt", "Limited"]
LIMIT_RESPONSE_TYPES = ["Queue", "Reject"]


def _validate_subject(subject: Obj, path: str) -> list[Cause]:
    kind = subject.get("kind")
    if kind == "ServiceAccount":
        account = subject.get("serviceAccount")
        if account is None:
            return [v.required(f"{path}.serviceAccount", "serviceAccount is required when subject kind is "
                                                         "'ServiceAccount'")]
        errs: list[Cause] = []
        for key in ("name", "namespace"):
            if not as_str(as_dict(account).get(key)):
                errs.append(v.required(f"{path}.serviceAccount.{key}", f"{key} is required"))
        return errs
    if kind in ("User", "Group"):
        key = kind.lower()
        if subject.get(key) is None:
            return [v.required(f"{path}.{key}", f"{key} is required when subject kind is '{kind}'")]
        if not as_str(as_dict(subject.get(key)).get("name")):
            return [v.required(f"{path}.{key}.name", f"{key} name is required")]
        return []
    return [v.not_supported(f"{path}.kind", kind, SUBJECT_KINDS)]


def _validate_resource_rule(rule: Obj, path: str) -> list[Cause]:
    errs: list[Cause] = []
    for key, what in (("verbs", "verbs must contain at least one value"),
                      ("apiGroups", "resource rules must supply at least one api group"),
                      ("resources", "resource rules must supply at least one resource")):
        if not as_list(rule.get(key)):
            errs.append(v.required(f"{path}.{key}", what))
    if not rule.get("clusterScope") and not as_list(rule.get("namespaces")):
        errs.append(v.required(f"{path}.namespaces", "resource rules that are not cluster scoped must supply at "
                                                     "least one namespace"))
    return errs


def _validate_rules(rules: list[Any], path: str) -> list[Cause]:
    errs: list[Cause] = []
    for i, rule in enumerate(rules):
        rule, rule_path = as_dict(rule), f"{path}[{i}]"
        subjects = as_list(rule.get("subjects"))
        if not subjects:
            errs.append(v.required(f"{rule_path}.subjects", "subjects must contain at least one value"))
        for j, subject in enumerate(subjects):
            errs += _validate_subject(as_dict(subject), f"{rule_path}.subjects[{j}]")
        resource_rules, non_resource_rules = as_list(rule.get("resourceRules")), as_list(rule.get("nonResourceRules"))
        if not resource_rules and not non_resource_rules:
            errs.append(v.required(rule_path, "at least one of resourceRules and nonResourceRules has to be "
                                              "non-empty"))
        for j, resource_rule in enumerate(resource_rules):
            errs += _validate_resource_rule(as_dict(resource_rule), f"{rule_path}.resourceRules[{j}]")
    return errs


class FlowSchemaStrategy(Strategy):
    tracks_generation = True
    name_validator = "dns1123subdomain"

    def default(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict) and not spec.get("matchingPrecedence"):
            spec["matchingPrecedence"] = DEFAULT_MATCHING_PRECEDENCE

    def validate(self, obj: Obj) -> list[Cause]:
        spec = spec_of(obj)
        errs: list[Cause] = []
        precedence = as_int(spec.get("matchingPrecedence")) or 0
        if precedence <= 0:
            errs.append(v.invalid_value("spec.matchingPrecedence", precedence, "must be a positive value"))
        elif precedence > MAX_MATCHING_PRECEDENCE:
            errs.append(v.invalid_value("spec.matchingPrecedence", precedence,
                                        f"must not be greater than {MAX_MATCHING_PRECEDENCE}"))
        method = spec.get("distinguisherMethod")
        if method is not None and as_dict(method).get("type") not in DISTINGUISHER_METHODS:
            errs.append(v.not_supported("spec.distinguisherMethod.type", as_dict(method).get("type"),
                                        DISTINGUISHER_METHODS))
        level = as_str(as_dict(spec.get("priorityLevelConfiguration")).get("name"))
        if not level:
            errs.append(v.required("spec.priorityLevelConfiguration.name", "must reference a priority level"))
        errs.extend(v.invalid_value("spec.priorityLevelConfiguration.name", level, m)
                    for m in (v.is_dns1123_subdomain(level) if level else []))
        return errs + _validate_rules(as_list(spec.get("rules")), "spec.rules")


def _validate_queuing(queuing: Obj, path: str) -> list[Cause]:
    errs: list[Cause] = []
    values = {key: as_int(queuing.get(key)) or 0 for key in ("queueLengthLimit", "queues", "handSize")}
    for key, value in values.items():
        if value <= 0:
            errs.append(v.invalid_value(f"{path}.{key}", value, "must be positive"))
    if values["handSize"] > values["queues"] > 0:
        errs.append(v.invalid_value(f"{path}.handSize", values["handSize"],
                                    f"should not be greater than queues ({values['queues']})"))
    return errs


def _validate_limited(limited: Obj, path: str) -> list[Cause]:
    errs: list[Cause] = []
    shares = as_int(limited.get("nominalConcurrencyShares"))
    if shares is not None and shares < 0:
        errs.append(v.invalid_value(f"{path}.nominalConcurrencyShares", shares, "must be a non-negative integer"))
    lendable = as_int(limited.get("lendablePercent"))
    if lendable is not None and not 0 <= lendable <= 100:
        errs.append(v.invalid_value(f"{path}.lendablePercent", lendable, "must be between 0 and 100, inclusive"))
    borrowing = as_int(limited.get("borrowingLimitPercent"))
    if borrowing is not None and borrowing < 0:
        errs.append(v.invalid_value(f"{path}.borrowingLimitPercent", borrowing,
                                    "if specified, must be a non-negative integer"))
    response, response_path = as_dict(limited.get("limitResponse")), f"{path}.limitResponse"
    response_type = response.get("type")
    if response_type == "Queue":
        if response.get("queuing") is None:
            errs.append(v.required(f"{response_path}.queuing", "must not be empty if type is Queue"))
        else:
            errs += _validate_queuing(as_dict(response.get("queuing")), f"{response_path}.queuing")
    elif response_type == "Reject":
        if response.get("queuing") is not None:
            errs.append(v.forbidden(f"{response_path}.queuing", "must be nil if limited.limitResponse.type is not "
                                                                 "Limited"))
    else:
        errs.append(v.not_supported(f"{response_path}.type", response_type, LIMIT_RESPONSE_TYPES))
    return errs


class PriorityLevelConfigurationStrategy(Strategy):
    tracks_generation = True
    name_validator = "dns1123subdomain"

    def default(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        if not isinstance(spec, dict):
            return
        exempt, limited = spec.get("exempt"), spec.get("limited")
        if isinstance(exempt, dict):
            for key in ("nominalConcurrencyShares", "lendablePercent"):
                if exempt.get(key) is None:
                    exempt[key] = 0
        if isinstance(limited, dict):
            if limited.get("nominalConcurrencyShares") is None:
                limited["nominalConcurrencyShares"] = DEFAULT_NOMINAL_CONCURRENCY_SHARES
            if limited.get("lendablePercent") is None:
                limited["lendablePercent"] = 0
            queuing = as_dict(limited.get("limitResponse")).get("queuing")
            if isinstance(queuing, dict):
                for key, value in (("queues", DEFAULT_QUEUES), ("handSize", DEFAULT_HAND_SIZE),
                                   ("queueLengthLimit", DEFAULT_QUEUE_LENGTH_LIMIT)):
                    if not queuing.get(key):
                        queuing[key] = value

    def validate(self, obj: Obj) -> list[Cause]:
        spec = spec_of(obj)
        level_type = spec.get("type")
        if level_type == "Exempt":
            if spec.get("limited") is not None:
                return [v.forbidden("spec.limited", "must be nil if the type is not Limited")]
            exempt = as_dict(spec.get("exempt"))
            shares, lendable = as_int(exempt.get("nominalConcurrencyShares")), as_int(exempt.get("lendablePercent"))
            errs: list[Cause] = []
            if shares is not None and shares < 0:
                errs.append(v.invalid_value("spec.exempt.nominalConcurrencyShares", shares,
                                            "must be a non-negative integer"))
            if lendable is not None and not 0 <= lendable <= 100:
                errs.append(v.invalid_value("spec.exempt.lendablePercent", lendable,
                                            "must be between 0 and 100, inclusive"))
            return errs
        if level_type == "Limited":
            errs = [v.forbidden("spec.exempt", "must be nil if the type is Limited")] if spec.get("exempt") else []
            if spec.get("limited") is None:
                return errs + [v.required("spec.limited", "must not be empty when type is Limited")]
            return errs + _validate_limited(as_dict(spec.get("limited")), "spec.limited")
        return [v.not_supported("spec.type", level_type, PRIORITY_LEVEL_TYPES)]
