"""Printers for cluster configuration kinds: PodTemplate, admission webhooks and policies, APIService,
CertificateSigningRequest, API priority and fairness, RuntimeClass, IPAddress and ServiceCIDR."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pocketkube.apiserver.printers.base import (
    AGE,
    NAME,
    NONE,
    UNSET,
    Cell,
    Obj,
    Printer,
    age,
    column,
    container_cells,
    dig,
    format_labels,
    human_duration,
    name,
)
from pocketkube.apiserver.printers.docs import DOCS

# --- PodTemplate ---------------------------------------------------------------------------------

_POD_TEMPLATE_COLUMNS = (
    NAME,
    column("Containers", "string", "Names of each container in the template."),
    column("Images", "string", "Images referenced by each container in the template."),
    column("Pod Labels", "string", "The labels for the pod template."),
)


def _pod_template_cells(template: Obj, now: datetime) -> list[Cell]:
    spec = dig(template, "template", "spec") or {}
    return [name(template), *container_cells(spec.get("containers")),
            format_labels(dig(template, "template", "metadata", "labels"))]


# --- admissionregistration.k8s.io ----------------------------------------------------------------

_WEBHOOK_COLUMNS = (
    NAME,
    column("Webhooks", "integer", "Webhooks indicates the number of webhooks registered in this configuration"),
    AGE,
)


def _webhook_configuration_cells(config: Obj, now: datetime) -> list[Cell]:
    return [name(config), len(config.get("webhooks") or []), age(config, now)]


_POLICY_COLUMNS = (
    NAME,
    column("Validations", "integer",
           "Validations indicates the number of validation rules defined in this configuration"),
    column("ParamKind", "string", "ParamKind specifies the kind of resources used to parameterize this policy"),
    AGE,
)


def _policy_cells(policy: Obj, now: datetime) -> list[Cell]:
    spec = policy.get("spec") or {}
    kind = spec.get("paramKind")
    param_kind = UNSET if kind is None else f"{kind.get('apiVersion', '')}/{kind.get('kind', '')}"
    return [name(policy), len(spec.get("validations") or []), param_kind, age(policy, now)]


_POLICY_BINDING_COLUMNS = (
    NAME,
    column("PolicyName", "string", "PolicyName indicates the policy definition which the policy binding binded to"),
    column("ParamRef", "string", "ParamRef indicates the param resource which sets the configration param"),
    AGE,
)


def go_label_selector_string(selector: Obj) -> str:
    """The gogo-protobuf String() of a *metav1.LabelSelector, which upstream prints as is."""
    labels = selector.get("matchLabels") or {}
    label_text = "".join(f"{key}: {labels[key]}," for key in sorted(labels))
    expressions = "".join(
        f"LabelSelectorRequirement{{Key:{e.get('key', '')},Operator:{e.get('operator', '')},"
        f"Values:[{' '.join(e.get('values') or [])}],}},"
        for e in selector.get("matchExpressions") or [])
    return (f"&LabelSelector{{MatchLabels:map[string]string{{{label_text}}},"
            f"MatchExpressions:[]LabelSelectorRequirement{{{expressions}}},}}")


def _param_ref(ref: Obj | None) -> str:
    if ref is None:
        return UNSET
    if ref.get("name"):
        # A reference without a namespace may name a cluster-scoped or a per-namespace parameter.
        return f"{ref.get('namespace') or '*'}/{ref['name']}"
    if ref.get("selector") is not None:
        return go_label_selector_string(ref["selector"])
    return UNSET


def _policy_binding_cells(binding: Obj, now: datetime) -> list[Cell]:
    spec = binding.get("spec") or {}
    return [name(binding), spec.get("policyName", ""), _param_ref(spec.get("paramRef")), age(binding, now)]


# --- apiregistration.k8s.io (kube-aggregator's own table) -----------------------------------------

_API_SERVICE_COLUMNS = (
    NAME,
    column("Service", "string", "The reference to the service that hosts this API endpoint."),
    column("Available", "string", "Whether this service is available."),
    AGE,
)


def _api_service_cells(service: Obj, now: datetime) -> list[Cell]:
    ref = dig(service, "spec", "service")
    backend = "Local" if ref is None else f"{ref.get('namespace', '')}/{ref.get('name', '')}"
    available = "Unknown"
    for condition in dig(service, "status", "conditions") or []:
        if condition.get("type") == "Available":
            status = condition.get("status", "")
            reason = condition.get("reason")
            available = f"{status} ({reason})" if status != "True" and reason else status
            break
    return [name(service), backend, available, age(service, now)]


# --- certificates.k8s.io -------------------------------------------------------------------------

_CSR_COLUMNS = (
    NAME,
    AGE,
    column("SignerName", "string", DOCS["certificates/v1.CertificateSigningRequestSpec.signerName"]),
    column("Requestor", "string", DOCS["certificates/v1.CertificateSigningRequestSpec.request"]),
    column("RequestedDuration", "string", DOCS["certificates/v1.CertificateSigningRequestSpec.expirationSeconds"]),
    column("Condition", "string", DOCS["certificates/v1.CertificateSigningRequestStatus.conditions"]),
)


def csr_condition(csr: Obj) -> str:
    """extractCSRStatus: Denied over Approved over Pending, then Failed and Issued."""
    types = {c.get("type") for c in dig(csr, "status", "conditions") or []}
    text = "Denied" if "Denied" in types else "Approved" if "Approved" in types else "Pending"
    if "Failed" in types:
        text += ",Failed"
    if dig(csr, "status", "certificate"):
        text += ",Issued"
    return text


def _csr_cells(csr: Obj, now: datetime) -> list[Cell]:
    spec = csr.get("spec") or {}
    seconds = spec.get("expirationSeconds")
    duration = NONE if seconds is None else human_duration(timedelta(seconds=seconds))
    return [name(csr), age(csr, now), spec.get("signerName") or NONE, spec.get("username", ""), duration,
            csr_condition(csr)]


# --- flowcontrol.apiserver.k8s.io ----------------------------------------------------------------

_FLOW_SCHEMA_COLUMNS = (
    NAME,
    column("PriorityLevel", "string", DOCS["flowcontrol/v1.PriorityLevelConfigurationReference.name"]),
    column("MatchingPrecedence", "string", DOCS["flowcontrol/v1.FlowSchemaSpec.matchingPrecedence"]),
    column("DistinguisherMethod", "string", DOCS["flowcontrol/v1.FlowSchemaSpec.distinguisherMethod"]),
    AGE,
    column("MissingPL", "string", "references a broken or non-existent PriorityLevelConfiguration"),
)


def _flow_schema_cells(schema: Obj, now: datetime) -> list[Cell]:
    spec = schema.get("spec") or {}
    method = spec.get("distinguisherMethod")
    dangling = next((c.get("status", "") for c in dig(schema, "status", "conditions") or []
                     if c.get("type") == "Dangling"), "?")
    return [name(schema), dig(spec, "priorityLevelConfiguration", "name") or "",
            spec.get("matchingPrecedence", 0), NONE if method is None else method.get("type", ""),
            age(schema, now), dangling]


_PRIORITY_LEVEL_COLUMNS = (
    NAME,
    column("Type", "string", DOCS["flowcontrol/v1.PriorityLevelConfigurationSpec.type"]),
    column("NominalConcurrencyShares", "string",
           DOCS["flowcontrol/v1.LimitedPriorityLevelConfiguration.nominalConcurrencyShares"]),
    column("Queues", "string", DOCS["flowcontrol/v1.QueuingConfiguration.queues"]),
    column("HandSize", "string", DOCS["flowcontrol/v1.QueuingConfiguration.handSize"]),
    column("QueueLengthLimit", "string", DOCS["flowcontrol/v1.QueuingConfiguration.queueLengthLimit"]),
    AGE,
)


def _priority_level_cells(level: Obj, now: datetime) -> list[Cell]:
    spec = level.get("spec") or {}
    limited = spec.get("limited")
    shares: Any = NONE
    queuing_cells: list[Any] = [NONE, NONE, NONE]
    if limited is not None:
        shares = limited.get("nominalConcurrencyShares", 0)
        queuing = dig(limited, "limitResponse", "queuing")
        if queuing is not None:
            queuing_cells = [queuing.get(key, 0) for key in ("queues", "handSize", "queueLengthLimit")]
    return [name(level), spec.get("type", ""), shares, *queuing_cells, age(level, now)]


# --- node.k8s.io ---------------------------------------------------------------------------------

# Upstream describes the handler with ObjectMeta's (absent) "handler" doc: an empty description.
_RUNTIME_CLASS_COLUMNS = (NAME, column("Handler", "string", ""), AGE)


def _runtime_class_cells(runtime_class: Obj, now: datetime) -> list[Cell]:
    return [name(runtime_class), runtime_class.get("handler", ""), age(runtime_class, now)]


# --- networking.k8s.io ---------------------------------------------------------------------------

# Upstream's row also carries an age, beyond its two columns; kubectl shows only the columns, so the
# row stops there too.
_IP_ADDRESS_COLUMNS = (NAME, column("ParentRef", "string", DOCS["networking/v1.IPAddressSpec.parentRef"]))


def _ip_address_cells(address: Obj, now: datetime) -> list[Cell]:
    ref = dig(address, "spec", "parentRef")
    parent = NONE
    if ref is not None:
        group, resource = ref.get("group", ""), ref.get("resource", "")
        parent = (f"{resource}.{group}" if group else resource).lower()  # schema.GroupResource.String()
        if ref.get("namespace"):
            parent += "/" + ref["namespace"]
        parent += "/" + ref.get("name", "")
    return [name(address), parent]


_SERVICE_CIDR_COLUMNS = (NAME, column("CIDRs", "string", DOCS["networking/v1.ServiceCIDRSpec.cidrs"]), AGE)


def _service_cidr_cells(cidr: Obj, now: datetime) -> list[Cell]:
    return [name(cidr), ",".join(dig(cidr, "spec", "cidrs") or []), age(cidr, now)]


PRINTERS: dict[tuple[str, str, str], Printer] = {
    ("", "v1", "PodTemplate"): Printer(_POD_TEMPLATE_COLUMNS, _pod_template_cells),
    ("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration"): Printer(
        _WEBHOOK_COLUMNS, _webhook_configuration_cells),
    ("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration"): Printer(
        _WEBHOOK_COLUMNS, _webhook_configuration_cells),
    ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy"): Printer(_POLICY_COLUMNS, _policy_cells),
    ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding"): Printer(
        _POLICY_BINDING_COLUMNS, _policy_binding_cells),
    ("apiregistration.k8s.io", "v1", "APIService"): Printer(_API_SERVICE_COLUMNS, _api_service_cells),
    ("certificates.k8s.io", "v1", "CertificateSigningRequest"): Printer(_CSR_COLUMNS, _csr_cells),
    ("flowcontrol.apiserver.k8s.io", "v1", "FlowSchema"): Printer(_FLOW_SCHEMA_COLUMNS, _flow_schema_cells),
    ("flowcontrol.apiserver.k8s.io", "v1", "PriorityLevelConfiguration"): Printer(
        _PRIORITY_LEVEL_COLUMNS, _priority_level_cells),
    ("node.k8s.io", "v1", "RuntimeClass"): Printer(_RUNTIME_CLASS_COLUMNS, _runtime_class_cells),
    ("networking.k8s.io", "v1", "IPAddress"): Printer(_IP_ADDRESS_COLUMNS, _ip_address_cells),
    ("networking.k8s.io", "v1", "ServiceCIDR"): Printer(_SERVICE_CIDR_COLUMNS, _service_cidr_cells),
}
