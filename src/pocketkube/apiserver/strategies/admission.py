"""admissionregistration.k8s.io/v1: webhook configurations, ValidatingAdmissionPolicies and their bindings.

These objects are stored and validated only: the server does not yet call the webhooks they configure nor
evaluate the policies (admission/webhook.py is where that will plug in), and CEL expressions are checked
for presence, not compiled.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pocketkube.api import validation as v
from pocketkube.api.errors import Cause
from pocketkube.api.selectors import validate_label_selector
from pocketkube.apiserver.strategy import Obj, Strategy

from ._access import as_dict, as_list, as_str, name_of, spec_of

FAILURE_POLICIES = ["Fail", "Ignore"]
MATCH_POLICIES = ["Equivalent", "Exact"]
SIDE_EFFECTS = ["None", "NoneOnDryRun"]  # v1 allows only webhooks without side effects
OPERATIONS = ["*", "CONNECT", "CREATE", "DELETE", "UPDATE"]
SCOPES = ["*", "Cluster", "Namespaced"]
REINVOCATION_POLICIES = ["IfNeeded", "Never"]
VALIDATION_ACTIONS = ["Audit", "Deny", "Warn"]
VALIDATION_REASONS = ["Forbidden", "Invalid", "RequestEntityTooLarge"]
PARAMETER_NOT_FOUND_ACTIONS = ["Deny", "Allow"]
ADMISSION_REVIEW_VERSIONS = ("v1", "v1beta1")
DEFAULT_TIMEOUT_SECONDS = 10
MAX_MATCH_CONDITIONS = 64
MAX_AUDIT_ANNOTATIONS = 20
# Words CEL reserves, which may not name a variable.
CEL_RESERVED = frozenset({"true", "false", "null", "in", "as", "break", "const", "continue", "else", "for",
                          "function", "if", "import", "let", "loop", "package", "namespace", "return", "var",
                          "void", "while"})
_URL_FORM = "; desired format: https://host[/path]"


# --- defaulting ------------------------------------------------------------------------------------

def _default_rules(rules: Any) -> None:
    """SetDefaults_Rule: a rule without a scope applies to every scope."""
    for rule in as_list(rules):
        if isinstance(rule, dict) and rule.get("scope") is None:
            rule["scope"] = "*"


def _default_match_resources(match: Any) -> None:
    """SetDefaults_MatchResources."""
    if not isinstance(match, dict):
        return
    if match.get("matchPolicy") is None:
        match["matchPolicy"] = "Equivalent"
    for key in ("namespaceSelector", "objectSelector"):
        if match.get(key) is None:
            match[key] = {}
    _default_rules(match.get("resourceRules"))
    _default_rules(match.get("excludeResourceRules"))


def _default_webhook(hook: Obj, *, mutating: bool) -> None:
    """SetDefaults_ValidatingWebhook / SetDefaults_MutatingWebhook, with their rules and service."""
    if hook.get("failurePolicy") is None:
        hook["failurePolicy"] = "Fail"
    if hook.get("matchPolicy") is None:
        hook["matchPolicy"] = "Equivalent"
    for key in ("namespaceSelector", "objectSelector"):
        if hook.get(key) is None:
            hook[key] = {}
    if hook.get("timeoutSeconds") is None:
        hook["timeoutSeconds"] = DEFAULT_TIMEOUT_SECONDS
    if mutating and hook.get("reinvocationPolicy") is None:
        hook["reinvocationPolicy"] = "Never"
    _default_rules(hook.get("rules"))
    service = as_dict(hook.get("clientConfig")).get("service")
    if isinstance(service, dict) and service.get("port") is None:
        service["port"] = 443


# --- shared validation -----------------------------------------------------------------------------

def fully_qualified_name_causes(name: str, path: str) -> list[Cause]:
    """utilvalidation.IsFullyQualifiedName: a DNS subdomain of at least three labels."""
    if not name:
        return [v.required(path)]
    problems = v.is_dns1123_subdomain(name)
    if problems:
        return [v.invalid_value(path, name, ",".join(problems))]
    if len(name.split(".")) < 3:
        return [v.invalid_value(path, name, "should be a domain with at least three segments separated by dots")]
    return []


def _with_wildcard_and_more(values: list[Any]) -> bool:
    return len(values) > 1 and "*" in values


def _validate_resources(resources: list[Any], path: str) -> list[Cause]:
    """validateResources: resources with subresources, and the wildcard combinations upstream forbids."""
    errs: list[Cause] = [] if resources else [v.required(path)]
    wildcard_subresources: set[str] = set()
    wildcard_resources: set[str] = set()
    has_single = has_plain = False
    for i, entry in enumerate(resources):
        entry = as_str(entry)
        if not entry:
            errs.append(v.required(f"{path}[{i}]"))
            continue
        has_single = has_single or entry == "*"
        resource, slash, sub = entry.partition("/")
        if not slash:
            has_plain = entry != "*"
            continue
        if resource in wildcard_subresources:
            errs.append(v.invalid_value(f"{path}[{i}]", entry, f"if '{resource}/*' is present, must not specify "
                                                                f"{entry}"))
        if sub in wildcard_resources:
            errs.append(v.invalid_value(f"{path}[{i}]", entry, f"if '*/{sub}' is present, must not specify {entry}"))
        if sub == "*":
            wildcard_subresources.add(resource)
        if resource == "*":
            wildcard_resources.add(sub)
    if len(resources) > 1 and "*/*" in resources:
        errs.append(v.invalid_value(path, resources, "if '*/*' is present, must not specify other resources"))
    if has_single and has_plain:
        errs.append(v.invalid_value(path, resources,
                                    "if '*' is present, must not specify other resources without subresources"))
    return errs


def _validate_rule_with_operations(rule: Obj, path: str) -> list[Cause]:
    errs: list[Cause] = []
    operations = as_list(rule.get("operations"))
    if not operations:
        errs.append(v.required(f"{path}.operations"))
    if _with_wildcard_and_more(operations):
        errs.append(v.invalid_value(f"{path}.operations", operations,
                                    "if '*' is present, must not specify other operations"))
    for i, operation in enumerate(operations):
        if operation not in OPERATIONS:
            errs.append(v.not_supported(f"{path}.operations[{i}]", operation, OPERATIONS))
    groups, versions = as_list(rule.get("apiGroups")), as_list(rule.get("apiVersions"))
    if not groups:
        errs.append(v.required(f"{path}.apiGroups"))
    if _with_wildcard_and_more(groups):
        errs.append(v.invalid_value(f"{path}.apiGroups", groups, "if '*' is present, must not specify other API "
                                                                 "groups"))
    if not versions:
        errs.append(v.required(f"{path}.apiVersions"))
    if _with_wildcard_and_more(versions):
        errs.append(v.invalid_value(f"{path}.apiVersions", versions,
                                    "if '*' is present, must not specify other API versions"))
    errs.extend(v.required(f"{path}.apiVersions[{i}]") for i, version in enumerate(versions) if not version)
    errs += _validate_resources(as_list(rule.get("resources")), f"{path}.resources")
    scope = rule.get("scope")
    if scope is not None and scope not in SCOPES:
        errs.append(v.not_supported(f"{path}.scope", scope, SCOPES))
    return errs


def _validate_match_conditions(conditions: list[Any], path: str) -> list[Cause]:
    errs: list[Cause] = []
    if len(conditions) > MAX_MATCH_CONDITIONS:
        errs.append(v.too_many(path, len(conditions), MAX_MATCH_CONDITIONS))
    seen: set[str] = set()
    for i, condition in enumerate(conditions):
        condition = as_dict(condition)
        if not as_str(condition.get("expression")).strip():
            errs.append(v.required(f"{path}[{i}].expression"))
        name = as_str(condition.get("name"))
        if not name:
            errs.append(v.required(f"{path}[{i}].name"))
        else:
            errs.extend(v.invalid_value(f"{path}[{i}].name", name, m) for m in v.is_qualified_name(name))
            if name in seen:
                errs.append(v.duplicate(f"{path}[{i}].name", name))
            seen.add(name)
    return errs


def _validate_webhook_url(url: str, path: str) -> list[Cause]:
    """webhook.ValidateWebhookURL with https forced."""
    try:
        parts = urlsplit(url)
    except ValueError as err:
        return [v.required(path, f"url must be a valid URL: {err}{_URL_FORM}")]
    errs: list[Cause] = []
    if parts.scheme != "https":
        errs.append(v.invalid_value(path, parts.scheme, f"'https' is the only allowed URL scheme{_URL_FORM}"))
    host = parts.netloc.rpartition("@")[2]
    if not host:
        errs.append(v.invalid_value(path, host, f"host must be specified{_URL_FORM}"))
    if "@" in parts.netloc:
        errs.append(v.invalid_value(path, parts.netloc.rpartition("@")[0],
                                    "user information is not permitted in the URL"))
    if parts.fragment:
        errs.append(v.invalid_value(path, parts.fragment, "fragments are not permitted in the URL"))
    if parts.query:
        errs.append(v.invalid_value(path, parts.query, "query parameters are not permitted in the URL"))
    return errs


def _validate_service_path(url_path: str, path: str) -> list[Cause]:
    if url_path in ("", "/"):
        return []
    if url_path == "//":
        return [v.invalid_value(path, url_path, "segment[0] may not be empty")]
    errs: list[Cause] = []
    if not url_path.startswith("/"):
        errs.append(v.invalid_value(path, url_path, "must start with a '/'"))
    steps = url_path[1:].removesuffix("/").split("/")
    for i, step in enumerate(steps):
        if not step:
            errs.append(v.invalid_value(path, url_path, f"segment[{i}] may not be empty"))
            continue
        errs.extend(v.invalid_value(path, url_path, f"segment[{i}]: {m}") for m in v.is_dns1123_subdomain(step))
    return errs


def validate_client_config(config: Any, path: str) -> list[Cause]:
    """A webhook's clientConfig: exactly one of an https URL or an in-cluster service."""
    config = as_dict(config)
    url, service = config.get("url"), config.get("service")
    if (url is None) == (service is None):
        return [v.required(path, "exactly one of url or service is required")]
    if url is not None:
        return _validate_webhook_url(as_str(url), f"{path}.url")
    service = as_dict(service)
    errs: list[Cause] = []
    if not as_str(service.get("name")):
        errs.append(v.required(f"{path}.service.name", "service name is required"))
    if not as_str(service.get("namespace")):
        errs.append(v.required(f"{path}.service.namespace", "service namespace is required"))
    port = service.get("port")
    if isinstance(port, int) and v.is_valid_port_num(port):
        errs.append(v.invalid_value(f"{path}.service.port", port,
                                    "port is not valid: " + ", ".join(v.is_valid_port_num(port))))
    if service.get("path") is not None:
        errs += _validate_service_path(as_str(service.get("path")), f"{path}.service.path")
    return errs


def _validate_admission_review_versions(versions: list[Any], path: str) -> list[Cause]:
    accepted = ", ".join(ADMISSION_REVIEW_VERSIONS)
    if not versions:
        return [v.required(path, f"must specify one of {accepted}")]
    errs: list[Cause] = []
    seen: set[str] = set()
    for i, version in enumerate(versions):
        version = as_str(version)
        if version in seen:
            errs.append(v.invalid_value(f"{path}[{i}]", version, "duplicate version"))
            continue
        seen.add(version)
        errs.extend(v.invalid_value(f"{path}[{i}]", version, m) for m in v.is_dns1035_label(version))
    if not seen.intersection(ADMISSION_REVIEW_VERSIONS):
        errs.append(v.invalid_value(path, versions, f"must include at least one of {accepted}"))
    return errs


def _validate_enum(obj: Obj, key: str, allowed: list[str], path: str) -> list[Cause]:
    value = obj.get(key)
    return [] if value is None or value in allowed else [v.not_supported(f"{path}.{key}", value, allowed)]


def _validate_webhook(hook: Obj, path: str, *, mutating: bool) -> list[Cause]:
    errs = fully_qualified_name_causes(as_str(hook.get("name")), f"{path}.name")
    for i, rule in enumerate(as_list(hook.get("rules"))):
        errs += _validate_rule_with_operations(as_dict(rule), f"{path}.rules[{i}]")
    errs += _validate_enum(hook, "failurePolicy", FAILURE_POLICIES, path)
    errs += _validate_enum(hook, "matchPolicy", MATCH_POLICIES, path)
    if hook.get("sideEffects") is None:
        errs.append(v.required(f"{path}.sideEffects", "must specify one of " + ", ".join(SIDE_EFFECTS)))
    errs += _validate_enum(hook, "sideEffects", SIDE_EFFECTS, path)
    timeout = hook.get("timeoutSeconds")
    if isinstance(timeout, int) and not 1 <= timeout <= 30:
        errs.append(v.invalid_value(f"{path}.timeoutSeconds", timeout,
                                    "the timeout value must be between 1 and 30 seconds"))
    for key in ("namespaceSelector", "objectSelector"):
        errs += validate_label_selector(hook.get(key), f"{path}.{key}")
    if mutating:
        errs += _validate_enum(hook, "reinvocationPolicy", REINVOCATION_POLICIES, path)
    errs += validate_client_config(hook.get("clientConfig"), f"{path}.clientConfig")
    errs += _validate_match_conditions(as_list(hook.get("matchConditions")), f"{path}.matchConditions")
    return errs


# --- webhook configurations ------------------------------------------------------------------------

class _WebhookConfigurationStrategy(Strategy):
    """Mutating/ValidatingWebhookConfiguration: generation grows when the webhooks change."""

    tracks_generation = True
    name_validator = "dns1123subdomain"
    mutating = False

    def default(self, obj: Obj) -> None:
        for hook in as_list(obj.get("webhooks")):
            if isinstance(hook, dict):
                _default_webhook(hook, mutating=self.mutating)

    def validate(self, obj: Obj) -> list[Cause]:
        errs: list[Cause] = []
        names: set[str] = set()
        for i, hook in enumerate(as_list(obj.get("webhooks"))):
            hook, path = as_dict(hook), f"webhooks[{i}]"
            errs += _validate_webhook(hook, path, mutating=self.mutating)
            errs += _validate_admission_review_versions(as_list(hook.get("admissionReviewVersions")),
                                                        f"{path}.admissionReviewVersions")
            name = as_str(hook.get("name"))
            if name and name in names:
                errs.append(v.duplicate(f"{path}.name", name))
            names.add(name)
        return errs


class MutatingWebhookConfigurationStrategy(_WebhookConfigurationStrategy):
    mutating = True


class ValidatingWebhookConfigurationStrategy(_WebhookConfigurationStrategy):
    mutating = False


# --- ValidatingAdmissionPolicy ---------------------------------------------------------------------

def _parse_group_version(api_version: str) -> tuple[str, str] | None:
    if api_version in ("", "/"):
        return "", ""
    if api_version.count("/") > 1:
        return None
    group, _, version = api_version.rpartition("/")
    return group, version


def _validate_param_kind(kind: Obj, path: str) -> list[Cause]:
    errs: list[Cause] = []
    api_version = as_str(kind.get("apiVersion"))
    gv = _parse_group_version(api_version)
    if not api_version:
        errs.append(v.required(f"{path}.apiVersion"))
    elif gv is None:
        errs.append(v.invalid_value(f"{path}.apiVersion", api_version,
                                    f"unexpected GroupVersion string: {api_version}"))
    else:
        group, version = gv
        if group and v.is_dns1123_subdomain(group):
            errs.append(v.invalid_value(f"{path}.apiVersion", group, ",".join(v.is_dns1123_subdomain(group))))
        if not version:
            errs.append(v.invalid_value(f"{path}.apiVersion", api_version, "version must be specified"))
        elif v.is_dns1035_label(version):
            errs.append(v.invalid_value(f"{path}.apiVersion", version, ",".join(v.is_dns1035_label(version))))
    kind_name = as_str(kind.get("kind"))
    if not kind_name:
        errs.append(v.required(f"{path}.kind"))
    elif v.is_dns1035_label(kind_name.lower()):
        errs.append(v.invalid_value(f"{path}.kind", kind_name, "may have mixed case, but should otherwise match: "
                                    + ",".join(v.is_dns1035_label(kind_name.lower()))))
    return errs


def _validate_match_resources(match: Obj, path: str) -> list[Cause]:
    errs: list[Cause] = []
    if match.get("matchPolicy") is None:
        errs.append(v.required(f"{path}.matchPolicy"))
    errs += _validate_enum(match, "matchPolicy", MATCH_POLICIES, path)
    for key in ("namespaceSelector", "objectSelector"):
        if match.get(key) is None:
            errs.append(v.required(f"{path}.{key}"))
        errs += validate_label_selector(match.get(key), f"{path}.{key}")
    for key in ("resourceRules", "excludeResourceRules"):
        for i, rule in enumerate(as_list(match.get(key))):
            rule, rule_path = as_dict(rule), f"{path}.{key}[{i}]"
            seen: set[str] = set()
            for j, name in enumerate(as_list(rule.get("resourceNames"))):
                errs.extend(v.invalid_value(f"{rule_path}.resourceNames[{j}]", name, m)
                            for m in v.is_path_segment_name(as_str(name)))
                if name in seen:
                    errs.append(v.duplicate(f"{rule_path}.resourceNames[{j}]", name))
                seen.add(name)
            errs += _validate_rule_with_operations(rule, rule_path)
    return errs


def _validate_validation(rule: Obj, path: str) -> list[Cause]:
    errs: list[Cause] = []
    if not as_str(rule.get("expression")).strip():
        errs.append(v.required(f"{path}.expression", "expression is not specified"))
    message_expression = as_str(rule.get("messageExpression"))
    if message_expression and not message_expression.strip():
        errs.append(v.invalid_value(f"{path}.messageExpression", message_expression, "must be non-empty if "
                                                                                       "specified"))
    message = as_str(rule.get("message"))
    if message and not message.strip():
        errs.append(v.invalid_value(f"{path}.message", message, "message must be non-empty if specified"))
    elif "\n" in message.strip() or "\r" in message.strip():
        errs.append(v.invalid_value(f"{path}.message", message, "message must not contain line breaks"))
    errs += _validate_enum(rule, "reason", VALIDATION_REASONS, path)
    return errs


def _validate_audit_annotations(annotations: list[Any], policy_name: str, path: str) -> list[Cause]:
    errs: list[Cause] = []
    if len(annotations) > MAX_AUDIT_ANNOTATIONS:
        errs.append(v.invalid_value(path, annotations, f"must not have more than {MAX_AUDIT_ANNOTATIONS} "
                                                       "auditAnnotations"))
    keys: set[str] = set()
    for i, annotation in enumerate(annotations):
        annotation, item = as_dict(annotation), f"{path}[{i}]"
        key = as_str(annotation.get("key"))
        if policy_name:
            errs.extend(v.invalid_value(f"{item}.key", f"{policy_name}/{key}", m)
                        for m in v.is_qualified_name(f"{policy_name}/{key}"))
        else:
            errs.append(v.invalid_value(f"{item}.key", key, "requires metadata.name be non-empty"))
        if not as_str(annotation.get("valueExpression")).strip():
            errs.append(v.required(f"{item}.valueExpression", "valueExpression is not specified"))
        if key in keys:
            errs.append(v.duplicate(f"{item}.key", key))
        keys.add(key)
    return errs


def _validate_variables(variables: list[Any], path: str) -> list[Cause]:
    errs: list[Cause] = []
    for i, variable in enumerate(variables):
        variable, item = as_dict(variable), f"{path}[{i}]"
        name = as_str(variable.get("name"))
        if not name.strip():
            errs.append(v.required(f"{item}.name", "name is not specified"))
        elif not (name.isidentifier() and name.isascii()) or name in CEL_RESERVED:
            errs.append(v.invalid_value(f"{item}.name", name, "name is not a valid CEL identifier"))
        if not as_str(variable.get("expression")).strip():
            errs.append(v.required(f"{item}.expression", "expression is not specified"))
    return errs


class ValidatingAdmissionPolicyStrategy(Strategy):
    tracks_generation = True
    name_validator = "dns1123subdomain"

    def default(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict):
            if spec.get("failurePolicy") is None:
                spec["failurePolicy"] = "Fail"
            _default_match_resources(spec.get("matchConstraints"))

    def validate(self, obj: Obj) -> list[Cause]:
        spec, path = spec_of(obj), "spec"
        errs: list[Cause] = []
        if spec.get("failurePolicy") is None:
            errs.append(v.required(f"{path}.failurePolicy"))
        errs += _validate_enum(spec, "failurePolicy", FAILURE_POLICIES, path)
        if spec.get("paramKind") is not None:
            errs += _validate_param_kind(as_dict(spec.get("paramKind")), f"{path}.paramKind")
        match = spec.get("matchConstraints")
        if match is None:
            errs.append(v.required(f"{path}.matchConstraints"))
        else:
            errs += _validate_match_resources(as_dict(match), f"{path}.matchConstraints")
            if not as_list(as_dict(match).get("resourceRules")):
                errs.append(v.required(f"{path}.matchConstraints.resourceRules"))
        errs += _validate_match_conditions(as_list(spec.get("matchConditions")), f"{path}.matchConditions")
        errs += _validate_variables(as_list(spec.get("variables")), f"{path}.variables")
        validations, audit = as_list(spec.get("validations")), as_list(spec.get("auditAnnotations"))
        if not validations and not audit:
            detail = "validations or auditAnnotations must contain at least one item"
            return errs + [v.required(f"{path}.validations", detail), v.required(f"{path}.auditAnnotations", detail)]
        for i, rule in enumerate(validations):
            errs += _validate_validation(as_dict(rule), f"{path}.validations[{i}]")
        return errs + _validate_audit_annotations(audit, name_of(obj), f"{path}.auditAnnotations")


def _validate_param_ref(ref: Obj, path: str) -> list[Cause]:
    errs: list[Cause] = []
    name, selector = as_str(ref.get("name")), ref.get("selector")
    exclusive = "name and selector are mutually exclusive"
    if name:
        errs.extend(v.invalid_value(f"{path}.name", name, m) for m in v.is_path_segment_name(name))
        if selector is not None:
            errs.append(v.forbidden(f"{path}.name", exclusive))
    if selector is not None:
        errs += validate_label_selector(as_dict(selector), f"{path}.selector")
        if name:
            errs.append(v.forbidden(f"{path}.selector", exclusive))
    if not name and selector is None:
        errs.append(v.required(path, "one of name or selector must be specified"))
    action = ref.get("parameterNotFoundAction")
    if not action:
        errs.append(v.required(f"{path}.parameterNotFoundAction"))
    elif action not in PARAMETER_NOT_FOUND_ACTIONS:
        errs.append(v.not_supported(f"{path}.parameterNotFoundAction", action, PARAMETER_NOT_FOUND_ACTIONS))
    return errs


def _validate_validation_actions(actions: list[Any], path: str) -> list[Cause]:
    errs: list[Cause] = []
    seen: set[str] = set()
    for i, action in enumerate(actions):
        if action not in VALIDATION_ACTIONS:
            errs.append(v.not_supported(f"{path}[{i}]", action, VALIDATION_ACTIONS))
        if action in seen:
            errs.append(v.duplicate(f"{path}[{i}]", action))
        seen.add(action)
    if {"Deny", "Warn"} <= seen:
        errs.append(v.invalid_value(path, actions, "must not contain both Deny and Warn (repeating the same "
                                                   "validation failure information in the API response and "
                                                   "headers serves no purpose)"))
    if not seen:
        errs.append(v.required(path, "at least one validation action is required"))
    return errs


class ValidatingAdmissionPolicyBindingStrategy(Strategy):
    tracks_generation = True
    name_validator = "dns1123subdomain"

    def default(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        if not isinstance(spec, dict):
            return
        _default_match_resources(spec.get("matchResources"))
        ref = spec.get("paramRef")
        if isinstance(ref, dict) and ref.get("parameterNotFoundAction") is None:
            ref["parameterNotFoundAction"] = "Deny"

    def validate(self, obj: Obj) -> list[Cause]:
        spec = spec_of(obj)
        errs: list[Cause] = []
        policy = as_str(spec.get("policyName"))
        if not policy:
            errs.append(v.required("spec.policyName"))
        else:
            errs.extend(v.invalid_value("spec.policyName", policy, m) for m in v.is_dns1123_subdomain(policy))
        if spec.get("paramRef") is not None:
            errs += _validate_param_ref(as_dict(spec.get("paramRef")), "spec.paramRef")
        if spec.get("matchResources") is not None:
            errs += _validate_match_resources(as_dict(spec.get("matchResources")), "spec.matchResources")
        return errs + _validate_validation_actions(as_list(spec.get("validationActions")),
                                                   "spec.validationActions")
