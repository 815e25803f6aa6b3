"""The kinds added to complete 1.37's built-in API: catalogue, strategies (defaulting, validation, update
rules, a CSR's requester and approval) and table printers."""

from __future__ import annotations

import asyncio
import base64
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pocketkube.api.errors import Cause, StatusError
from pocketkube.api.kinds import (
    BUILTIN_RESOURCES,
    GROUP_ORDER,
    PREFERRED_VERSIONS,
    ResourceCatalog,
    ResourceInfo,
)
from pocketkube.apiserver import apiservices, discovery, openapi
from pocketkube.apiserver.authn import UserInfo
from pocketkube.apiserver.componentstatus import ComponentStatuses
from pocketkube.apiserver.printers import column_definitions, to_table
from pocketkube.apiserver.strategies import StrategySet, build_strategies
from pocketkube.apiserver.strategy import Strategy

CATALOG = ResourceCatalog()
NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
CREATED = (NOW - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def strategies() -> StrategySet:
    return build_strategies(CATALOG)


def texts(causes: list[Cause]) -> list[str]:
    return [f"{c.field}: {c.message}" for c in causes]


def prepared(strategy: Strategy, obj: dict[str, Any]) -> dict[str, Any]:
    """The object as a create stores it (validation aside)."""
    strategy.default(obj)
    strategy.prepare_for_create(obj)
    return obj


def csr_pem(common_name: str = "alice") -> str:
    """A signed PKCS#10 request in PEM, base64-encoded as spec.request carries it."""
    key = ec.generate_private_key(ec.SECP256R1())
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .sign(key, hashes.SHA256()))
    return base64.b64encode(request.public_bytes(serialization.Encoding.PEM)).decode()


def certificate_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ca")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode()


# --- catalogue, discovery, OpenAPI -------------------------------------------------------------------

NEW_RESOURCES = {
    # plural: (group, namespaced, short names, categories, subresources)
    "podtemplates": ("", True, (), (), ()),
    "mutatingwebhookconfigurations": ("admissionregistration.k8s.io", False, (), ("api-extensions",), ()),
    "validatingwebhookconfigurations": ("admissionregistration.k8s.io", False, (), ("api-extensions",), ()),
    "validatingadmissionpolicies": ("admissionregistration.k8s.io", False, (), ("api-extensions",), ("status",)),
    "validatingadmissionpolicybindings": ("admissionregistration.k8s.io", False, (), ("api-extensions",), ()),
    "apiservices": ("apiregistration.k8s.io", False, (), ("api-extensions",), ("status",)),
    "certificatesigningrequests": ("certificates.k8s.io", False, ("csr",), (), ("approval", "status")),
    "flowschemas": ("flowcontrol.apiserver.k8s.io", False, (), (), ("status",)),
    "prioritylevelconfigurations": ("flowcontrol.apiserver.k8s.io", False, (), (), ("status",)),
    "ipaddresses": ("networking.k8s.io", False, ("ip",), (), ()),
    "servicecidrs": ("networking.k8s.io", False, (), (), ("status",)),
    "runtimeclasses": ("node.k8s.io", False, (), (), ()),
    "deviceclasses": ("resource.k8s.io", False, (), (), ()),
    "resourceclaims": ("resource.k8s.io", True, (), (), ("status",)),
    "resourceclaimtemplates": ("resource.k8s.io", True, (), (), ()),
    "resourceslices": ("resource.k8s.io", False, (), (), ()),
    "csidrivers": ("storage.k8s.io", False, (), (), ()),
    "csinodes": ("storage.k8s.io", False, (), (), ()),
    "csistoragecapacities": ("storage.k8s.io", True, (), (), ()),
    "volumeattachments": ("storage.k8s.io", False, (), (), ("status",)),
    "volumeattributesclasses": ("storage.k8s.io", False, ("vac",), (), ()),
}


@pytest.mark.parametrize("plural", NEW_RESOURCES)
def test_catalogue_entry_as_upstream_discovery_lists_it(plural: str) -> None:
    group, namespaced, short, categories, subresources = NEW_RESOURCES[plural]
    info = CATALOG.resource(group, "v1", plural)
    assert info is not None
    assert (info.namespaced, info.short_names, info.categories, info.subresources) == (
        namespaced, short, categories, subresources)
    assert info.verbs == ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


def test_groups_listed_in_upstream_priority_order() -> None:
    groups = [g["name"] for g in discovery.api_group_list(CATALOG)["groups"]]
    assert groups == [g for g in GROUP_ORDER if g]
    assert list(PREFERRED_VERSIONS) == list(GROUP_ORDER)
    assert PREFERRED_VERSIONS["autoscaling"] == "v2"
    # Custom resources' groups follow every built-in one.
    with_crd = ResourceCatalog()
    with_crd.add(ResourceInfo("example.com", "v1", "Widget", "widgets", True))
    assert list(with_crd.group_versions()) == [*GROUP_ORDER, "example.com"]
    assert [i.group for i in BUILTIN_RESOURCES] == sorted((i.group for i in BUILTIN_RESOURCES), key=GROUP_ORDER.index)


def test_csr_approval_in_discovery_and_openapi() -> None:
    resources = discovery.api_resource_list(CATALOG, "certificates.k8s.io", "v1")["resources"]
    assert [(r["name"], r["verbs"]) for r in resources[1:]] == [
        ("certificatesigningrequests/approval", ["get", "patch", "update"]),
        ("certificatesigningrequests/status", ["get", "patch", "update"])]
    assert resources[1]["kind"] == "CertificateSigningRequest" and "version" not in resources[1]
    doc = openapi.openapi_v3_document(CATALOG, "apis/certificates.k8s.io/v1")
    assert b"/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}/approval" in doc
    assert b"replaceCertificatesV1CertificateSigningRequestApproval" in doc


def test_definitions_of_groups_outside_k8s_api() -> None:
    assert CATALOG.resource("apiregistration.k8s.io", "v1", "apiservices").definition == (
        "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.APIService")
    assert CATALOG.resource("resource.k8s.io", "v1", "resourceclaims").definition == (
        "io.k8s.api.resource.v1.ResourceClaim")


# --- PodTemplate, RuntimeClass -----------------------------------------------------------------------

def test_pod_template_defaults_and_validates_its_template(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("", "v1", "podtemplates"))
    assert s.tracks_generation
    empty = prepared(s, {"metadata": {"name": "t", "namespace": "default"}})
    assert empty["template"]["spec"]["restartPolicy"] == "Always"
    assert "template.spec.containers: Required value" in texts(s.validate(empty))
    good = prepared(s, {"metadata": {"name": "t", "namespace": "default"},
                        "template": {"spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}})
    assert good["template"]["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    assert s.validate(good) == []


def test_runtime_class(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("node.k8s.io", "v1", "runtimeclasses"))
    missing = {"metadata": {"name": "gvisor"}}
    assert texts(s.validate(missing)) == [
        "handler: Invalid value: \"\": a lowercase RFC 1123 label must consist of lower case alphanumeric "
        "characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
        "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"]
    rc = {"metadata": {"name": "gvisor"}, "handler": "runsc", "overhead": {"podFixed": {"memory": "-1Mi"}}}
    assert texts(s.validate(rc)) == [
        'overhead.limits[memory]: Invalid value: "-1Mi": must be greater than or equal to 0']
    rc["overhead"]["podFixed"]["memory"] = "120Mi"
    changed = {**copy.deepcopy(rc), "handler": "kata"}
    assert texts(s.validate_update(changed, rc)) == ['handler: Invalid value: "kata": field is immutable']


# --- admissionregistration.k8s.io --------------------------------------------------------------------

def webhook(**overrides: Any) -> dict[str, Any]:
    return {"name": "check.example.com", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "clientConfig": {"service": {"name": "hook", "namespace": "default"}},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"]}], **overrides}


def test_mutating_webhook_defaults(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations"))
    config = prepared(s, {"metadata": {"name": "m"}, "webhooks": [webhook()]})
    hook = config["webhooks"][0]
    assert {k: hook[k] for k in ("failurePolicy", "matchPolicy", "namespaceSelector", "objectSelector",
                                 "timeoutSeconds", "reinvocationPolicy")} == {
        "failurePolicy": "Fail", "matchPolicy": "Equivalent", "namespaceSelector": {}, "objectSelector": {},
        "timeoutSeconds": 10, "reinvocationPolicy": "Never"}
    assert hook["rules"][0]["scope"] == "*"
    assert hook["clientConfig"]["service"]["port"] == 443
    assert s.validate(config) == []
    validating = strategies.strategy_for(("admissionregistration.k8s.io", "v1",
                                          "validatingwebhookconfigurations"))
    assert "reinvocationPolicy" not in prepared(validating, {"webhooks": [webhook()]})["webhooks"][0]


def test_webhook_validation_messages(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations"))
    bad = prepared(s, {"metadata": {"name": "v"}, "webhooks": [
        webhook(name="check", sideEffects=None, admissionReviewVersions=[], timeoutSeconds=45,
                clientConfig={"url": "http://hooks.example.com/validate?x=1"},
                rules=[{"operations": ["READ"], "apiGroups": [], "apiVersions": ["v1"], "resources": ["*", "pods"]}]),
        webhook(), webhook()]})
    assert texts(s.validate(bad)) == [
        'webhooks[0].name: Invalid value: "check": should be a domain with at least three segments separated '
        'by dots',
        'webhooks[0].rules[0].operations[0]: Unsupported value: "READ": supported values: "*", "CONNECT", '
        '"CREATE", "DELETE", "UPDATE"',
        "webhooks[0].rules[0].apiGroups: Required value",
        "webhooks[0].rules[0].resources: Invalid value: [\"*\",\"pods\"]: if '*' is present, must not specify "
        "other resources without subresources",
        "webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun",
        "webhooks[0].timeoutSeconds: Invalid value: 45: the timeout value must be between 1 and 30 seconds",
        "webhooks[0].clientConfig.url: Invalid value: \"http\": 'https' is the only allowed URL scheme; "
        "desired format: https://host[/path]",
        'webhooks[0].clientConfig.url: Invalid value: "x=1": query parameters are not permitted in the URL',
        "webhooks[0].admissionReviewVersions: Required value: must specify one of v1, v1beta1",
        'webhooks[2].name: Duplicate value: "check.example.com"']
    neither = prepared(s, {"webhooks": [webhook(clientConfig={})]})
    assert texts(s.validate(neither)) == [
        "webhooks[0].clientConfig: Required value: exactly one of url or service is required"]


def test_validating_admission_policy_and_binding(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies"))
    assert s.tracks_generation and s.info.has_status
    rules = [{"operations": ["CREATE"], "apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments"]}]
    policy = prepared(s, {"metadata": {"name": "replicas"}, "spec": {
        "matchConstraints": {"resourceRules": rules},
        "validations": [{"expression": "object.spec.replicas <= 5"}]}, "status": {"observedGeneration": 3}})
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert policy["spec"]["matchConstraints"]["matchPolicy"] == "Equivalent"
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["scope"] == "*"
    assert policy["status"] == {}
    assert s.validate(policy) == []
    empty = prepared(s, {"metadata": {"name": "p"}, "spec": {"paramKind": {"apiVersion": "a/b/c", "kind": "K"}}})
    assert texts(s.validate(empty)) == [
        'spec.paramKind.apiVersion: Invalid value: "a/b/c": unexpected GroupVersion string: a/b/c',
        "spec.matchConstraints: Required value",
        "spec.validations: Required value: validations or auditAnnotations must contain at least one item",
        "spec.auditAnnotations: Required value: validations or auditAnnotations must contain at least one item"]

    b = strategies.strategy_for(("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings"))
    binding = prepared(b, {"metadata": {"name": "b"}, "spec": {"policyName": "replicas",
                                                             "paramRef": {"name": "limits"},
                                                             "validationActions": ["Deny"]}})
    assert binding["spec"]["paramRef"]["parameterNotFoundAction"] == "Deny"
    assert b.validate(binding) == []
    binding["spec"]["validationActions"] = ["Deny", "Warn", "Deny"]
    binding["spec"]["policyName"] = ""
    assert texts(b.validate(binding)) == [
        "spec.policyName: Required value",
        'spec.validationActions[2]: Duplicate value: "Deny"',
        'spec.validationActions: Invalid value: ["Deny","Warn","Deny"]: must not contain both Deny and Warn '
        "(repeating the same validation failure information in the API response and headers serves no purpose)"]


# --- APIService --------------------------------------------------------------------------------------

def test_api_service(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("apiregistration.k8s.io", "v1", "apiservices"))
    svc = prepared(s, {"metadata": {"name": "v1beta1.metrics.k8s.io"}, "spec": {
        "group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100, "versionPriority": 100,
        "service": {"name": "metrics-server", "namespace": "kube-system"}, "insecureSkipTLSVerify": True}})
    assert svc["spec"]["service"]["port"] == 443 and svc["status"] == {}
    assert s.validate(svc) == []
    wrong = {"metadata": {"name": "v1.metrics.k8s.io"}, "spec": {"group": "metrics.k8s.io", "version": "v1beta1",
                                                                "groupPriorityMinimum": 0, "versionPriority": 100,
                                                                "caBundle": "AAAA"}}
    assert texts(s.validate(wrong)) == [
        'metadata.name: Invalid value: "v1.metrics.k8s.io": must be `spec.version+"."+spec.group`: '
        '"v1beta1.metrics.k8s.io"',
        "spec.groupPriorityMinimum: Invalid value: 0: must be positive and less than 20000",
        'spec.caBundle: Invalid value: "3 bytes": local APIServices may not have a caBundle']


def test_local_apiservices_of_built_in_and_crd_group_versions() -> None:
    builtin = apiservices.builtin_apiservices()
    served = {(i.group, i.version) for i in BUILTIN_RESOURCES} - {("apiregistration.k8s.io", "v1")}
    assert {(o["spec"]["group"], o["spec"]["version"]) for o in builtin.values()} == served
    # Upstream's priorities put the groups in the order discovery lists them.
    by_priority = sorted({(-o["spec"]["groupPriorityMinimum"], o["spec"]["group"]) for o in builtin.values()})
    assert [g for _, g in by_priority][:4] == ["", "apps", "events.k8s.io", "authentication.k8s.io"]
    crd = {"spec": {"group": "stable.example.com", "versions": [{"name": "v1", "served": True},
                                                                 {"name": "v2", "served": False}]}}
    assert apiservices.crd_apiservices([crd]) == {"v1.stable.example.com": {
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": "v1.stable.example.com", "labels": {apiservices.AUTOMANAGED: "true"}},
        "spec": {"group": "stable.example.com", "version": "v1", "groupPriorityMinimum": 1000,
                 "versionPriority": 100}}}


# --- ComponentStatus ---------------------------------------------------------------------------------

class _Storage:
    """Just enough of a storage for the etcd-0 probe: reads succeed, or fail with `error`."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    async def get(self, key: str) -> None:
        if self.error is not None:
            raise self.error


def test_component_statuses() -> None:
    info = CATALOG.resource("", "v1", "componentstatuses")
    assert info.verbs == ("get", "list") and info.short_names == ("cs",) and not info.namespaced
    assert info.deprecation == "v1 ComponentStatus is deprecated in v1.19+"
    statuses = ComponentStatuses(_Storage())  # type: ignore[arg-type]
    listed = asyncio.run(statuses.list())
    assert [(o["metadata"]["name"], o["conditions"]) for o in listed] == [
        ("scheduler", [{"type": "Healthy", "status": "False", "error": "the scheduler is not run by this server"}]),
        ("controller-manager", [{"type": "Healthy", "status": "False",
                                 "error": "the controller manager is not run by this server"}]),
        ("etcd-0", [{"type": "Healthy", "status": "True", "message": "ok"}])]
    failing = ComponentStatuses(_Storage(ConnectionRefusedError("connection refused")))  # type: ignore[arg-type]
    assert asyncio.run(failing.get("etcd-0"))["conditions"] == [
        {"type": "Healthy", "status": "False", "error": "connection refused"}]
    with pytest.raises(StatusError) as missing:
        asyncio.run(statuses.get("etcd-1"))
    assert (missing.value.code, missing.value.reason, str(missing.value.message)) == (
        500, "Unknown", "Component not found: etcd-1")
    assert cells("", "ComponentStatus", listed[0])[1:] == ["Unhealthy", "", "the scheduler is not run by this server"]
    assert cells("", "ComponentStatus", listed[2])[1:] == ["Healthy", "ok", ""]


# --- CertificateSigningRequest -----------------------------------------------------------------------

CSR_INFO = ("certificates.k8s.io", "v1", "certificatesigningrequests")
ADMIN = UserInfo("kubernetes-admin", ("system:masters", "system:authenticated"), "uid-1")


def new_csr(strategy: Strategy, **spec: Any) -> dict[str, Any]:
    obj = {"metadata": {"name": "req"}, "spec": {"request": csr_pem(), "signerName": "example.com/signer",
                                                  "usages": ["client auth"], "username": "mallory", **spec},
           "status": {"conditions": [{"type": "Approved", "status": "True"}]}}
    prepared(strategy, obj)
    strategy.record_requester(obj, ADMIN)
    return obj


def test_csr_records_the_requester_and_clears_status(strategies: StrategySet) -> None:
    s = strategies.strategy_for(CSR_INFO)
    csr = new_csr(s)
    assert {k: csr["spec"][k] for k in ("username", "uid", "groups")} == {
        "username": "kubernetes-admin", "uid": "uid-1", "groups": ["system:masters", "system:authenticated"]}
    assert csr["status"] == {}
    assert s.validate(csr) == []
    server_write = new_csr(s)
    s.record_requester(server_write, None)
    assert "username" not in server_write["spec"] and "groups" not in server_write["spec"]
    assert s.field_getters()["spec.signerName"](csr) == "example.com/signer"


def test_csr_validation_messages(strategies: StrategySet) -> None:
    s = strategies.strategy_for(CSR_INFO)
    bad = new_csr(s, request=base64.b64encode(b"not pem").decode(), signerName="",
                  usages=["client auth", "bogus", "client auth"], expirationSeconds=60)
    assert texts(s.validate(bad)) == [
        'spec.request: Invalid value: "bm90IHBlbQ==": PEM block type must be CERTIFICATE REQUEST',
        'spec.usages[1]: Unsupported value: "bogus": supported values: "any", "cert sign", "client auth", '
        '"code signing", "content commitment", "crl sign", "data encipherment", "decipher only", '
        '"digital signature", "email protection", "encipher only", "ipsec end system", "ipsec tunnel", '
        '"ipsec user", "key agreement", "key encipherment", "microsoft sgc", "netscape sgc", "ocsp signing", '
        '"s/mime", "server auth", "signing", "timestamping"',
        'spec.usages[2]: Duplicate value: "client auth"',
        "spec.signerName: Required value",
        "spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 600 seconds (10 minutes)"]
    for signer, message in (
            ("example", "must be a fully qualified domain and path of the form 'example.com/signer-name'"),
            ("example/x", "should be a domain with at least two segments separated by dots"),
            ("kubernetes.io/legacy-unknown", "the legacy signerName is not allowed via this API version")):
        assert any(message in t for t in texts(s.validate(new_csr(s, signerName=signer)))), signer


def test_csr_spec_is_immutable_and_approval_only_through_approval(strategies: StrategySet) -> None:
    s = strategies.strategy_for(CSR_INFO)
    stored = new_csr(s)
    # The main endpoint keeps the stored spec and status whatever the client sends.
    edit = copy.deepcopy(stored)
    edit["spec"]["signerName"] = "example.com/other"
    edit["status"] = {"conditions": [{"type": "Approved", "status": "True"}]}
    edit["metadata"]["labels"] = {"a": "b"}
    s.prepare_for_update(edit, stored)
    assert edit["spec"] == stored["spec"] and edit["status"] == stored["status"]
    assert s.validate_update(edit, stored) == []
    # /status may not approve ...
    via_status = copy.deepcopy(stored)
    via_status["status"] = {"conditions": [{"type": "Approved", "status": "True", "reason": "R"}]}
    s.prepare_for_status_update(via_status, stored)
    assert texts(s.validate_status_update(via_status, stored)) == [
        'status.conditions: Forbidden: updates may not add a condition of type "Approved"']
    # ... /approval may, and gets the timestamps filled in; the spec still cannot change.
    approve = copy.deepcopy(stored)
    approve["spec"]["usages"] = ["server auth"]
    approve["status"] = {"conditions": [{"type": "Approved", "status": "True", "reason": "KubectlApprove"}],
                         "certificate": certificate_pem()}
    assert s.own_subresources == {"approval"}
    s.prepare_for_subresource_update("approval", approve, stored)
    assert approve["spec"] == stored["spec"] and "certificate" not in approve["status"]
    condition = approve["status"]["conditions"][0]
    assert condition["lastUpdateTime"] and condition["lastTransitionTime"] == condition["lastUpdateTime"]
    assert s.validate_subresource_update("approval", approve, stored) == []
    # Once approved: denial is exclusive, the approval cannot be withdrawn, the main endpoint cannot touch it.
    deny = copy.deepcopy(approve)
    deny["status"]["conditions"].append({"type": "Denied", "status": "True"})
    assert texts(s.validate_subresource_update("approval", deny, approve)) == [
        'status.conditions: Invalid value: "Denied": Approved and Denied conditions are mutually exclusive']
    withdraw = copy.deepcopy(approve)
    withdraw["status"] = {}
    assert texts(s.validate_subresource_update("approval", withdraw, approve)) == [
        'status.conditions: Forbidden: updates may not remove a condition of type "Approved"']


def test_csr_certificate_only_through_status_and_only_once(strategies: StrategySet) -> None:
    s = strategies.strategy_for(CSR_INFO)
    stored = new_csr(s)
    issued = copy.deepcopy(stored)
    issued["status"] = {"certificate": certificate_pem()}
    s.prepare_for_status_update(issued, stored)
    assert s.validate_status_update(issued, stored) == []
    reissued = copy.deepcopy(issued)
    reissued["status"]["certificate"] = certificate_pem()
    assert texts(s.validate_status_update(reissued, issued)) == [
        "status.certificate: Forbidden: updates may not modify existing certificate content"]
    garbage = copy.deepcopy(stored)
    garbage["status"] = {"certificate": base64.b64encode(b"-----BEGIN KEY-----\nAAAA\n-----END KEY-----\n").decode()}
    assert texts(s.validate_status_update(garbage, stored)) == [
        'status.certificate: Invalid value: "<certificate data>": only CERTIFICATE PEM blocks are allowed, '
        'found "KEY"']


# --- flowcontrol -------------------------------------------------------------------------------------

def test_flow_schema(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("flowcontrol.apiserver.k8s.io", "v1", "flowschemas"))
    fs = prepared(s, {"metadata": {"name": "f"}, "spec": {"priorityLevelConfiguration": {"name": "workload-low"},
                                                         "distinguisherMethod": {"type": "ByUser"}, "rules": [{
                                                             "subjects": [{"kind": "Group",
                                                                           "group": {"name": "devs"}}],
                                                             "nonResourceRules": [{"verbs": ["*"],
                                                                                   "nonResourceURLs": ["*"]}]}]}})
    assert fs["spec"]["matchingPrecedence"] == 1000 and fs["status"] == {}
    assert s.validate(fs) == []
    fs["spec"].update(matchingPrecedence=20000, distinguisherMethod={"type": "ByPod"}, priorityLevelConfiguration={})
    fs["spec"]["rules"] = [{"subjects": [{"kind": "Robot"}]}]
    assert texts(s.validate(fs)) == [
        "spec.matchingPrecedence: Invalid value: 20000: must not be greater than 10000",
        'spec.distinguisherMethod.type: Unsupported value: "ByPod": supported values: "ByNamespace", "ByUser"',
        "spec.priorityLevelConfiguration.name: Required value: must reference a priority level",
        'spec.rules[0].subjects[0].kind: Unsupported value: "Robot": supported values: "Group", '
        '"ServiceAccount", "User"',
        "spec.rules[0]: Required value: at least one of resourceRules and nonResourceRules has to be non-empty"]


def test_priority_level_configuration(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("flowcontrol.apiserver.k8s.io", "v1", "prioritylevelconfigurations"))
    plc = prepared(s, {"metadata": {"name": "p"}, "spec": {"type": "Limited", "limited": {
        "limitResponse": {"type": "Queue", "queuing": {}}}}})
    assert plc["spec"]["limited"] == {"nominalConcurrencyShares": 30, "lendablePercent": 0, "limitResponse": {
        "type": "Queue", "queuing": {"queues": 64, "handSize": 8, "queueLengthLimit": 50}}}
    assert s.validate(plc) == []
    plc["spec"]["limited"]["limitResponse"]["queuing"]["handSize"] = 100
    plc["spec"]["limited"]["lendablePercent"] = 101
    assert texts(s.validate(plc)) == [
        "spec.limited.lendablePercent: Invalid value: 101: must be between 0 and 100, inclusive",
        "spec.limited.limitResponse.queuing.handSize: Invalid value: 100: should not be greater than queues (64)"]
    assert texts(s.validate({"spec": {"type": "Limited"}})) == [
        "spec.limited: Required value: must not be empty when type is Limited"]
    assert texts(s.validate({"spec": {"type": "Bursty"}})) == [
        'spec.type: Unsupported value: "Bursty": supported values: "Exempt", "Limited"']


# --- networking: IPAddress, ServiceCIDR --------------------------------------------------------------

def test_ip_address(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("networking.k8s.io", "v1", "ipaddresses"))
    ref = {"group": "", "resource": "services", "namespace": "default", "name": "web"}
    good = {"metadata": {"name": "10.43.0.10"}, "spec": {"parentRef": ref}}
    assert s.validate(good) == []
    assert texts(s.validate({"metadata": {"name": "2001:DB8::1"}, "spec": {"parentRef": {"resource": "services"}}})) == [
        'metadata.name: Invalid value: "2001:DB8::1": must be a canonical format IP address',
        "spec.parentRef.name: Required value"]
    assert texts(s.validate({"metadata": {"name": "web"}, "spec": {}})) == [
        'metadata.name: Invalid value: "web": ParseAddr("web"): unable to parse IP', "spec.parentRef: Required value"]
    moved = copy.deepcopy(good)
    moved["spec"]["parentRef"]["name"] = "api"
    assert len(s.validate_update(moved, good)) == 1


def test_service_cidr(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("networking.k8s.io", "v1", "servicecidrs"))
    v4 = {"metadata": {"name": "extra"}, "spec": {"cidrs": ["10.96.0.0/16"]}}
    assert s.validate(v4) == []
    assert texts(s.validate({"spec": {"cidrs": ["10.96.0.0/16", "10.97.0.0/16"]}})) == [
        'spec.cidrs: Invalid value: ["10.96.0.0/16","10.97.0.0/16"]: may specify no more than one IP for each IP '
        "family, i.e 192.168.0.0/24 and 2001:db8::/64"]
    assert texts(s.validate({"spec": {}})) == ["spec.cidrs: Required value: at least one CIDR required"]
    dual = {"metadata": {"name": "extra"}, "spec": {"cidrs": ["10.96.0.0/16", "fd00::/108"]}}
    assert s.validate_update(dual, v4) == []  # a single-stack range may become dual-stack
    changed = {"metadata": {"name": "extra"}, "spec": {"cidrs": ["10.98.0.0/16"]}}
    assert texts(s.validate_update(changed, v4)) == [
        'spec.cidrs[0]: Invalid value: "10.98.0.0/16": field is immutable']


# --- resource.k8s.io ---------------------------------------------------------------------------------

def test_resource_claim_defaults_validation_and_immutability(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("resource.k8s.io", "v1", "resourceclaims"))
    claim = prepared(s, {"metadata": {"name": "gpu", "namespace": "default"}, "spec": {"devices": {"requests": [
        {"name": "gpu", "exactly": {"deviceClassName": "gpu.example.com"}},
        {"name": "any", "firstAvailable": [{"name": "big", "deviceClassName": "big.example.com",
                                            "allocationMode": "All"}]}]}}})
    requests = claim["spec"]["devices"]["requests"]
    assert requests[0]["exactly"]["allocationMode"] == "ExactCount" and requests[0]["exactly"]["count"] == 1
    assert "count" not in requests[1]["firstAvailable"][0]
    assert claim["status"] == {}
    assert s.validate(claim) == []
    bad = {"spec": {"devices": {"requests": [{"name": "GPU"}, {"name": "b", "exactly": {
        "allocationMode": "Some"}}]}}}
    assert texts(s.validate(bad)) == [
        'spec.devices.requests[0].name: Invalid value: "GPU": a lowercase RFC 1123 label must consist of lower '
        "case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. "
        "'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        "spec.devices.requests[0]: Required value: exactly one of `exactly` or `firstAvailable` is required",
        "spec.devices.requests[1].exactly.deviceClassName: Required value",
        'spec.devices.requests[1].exactly.allocationMode: Unsupported value: "Some": supported values: "All", '
        '"ExactCount"']
    changed = copy.deepcopy(claim)
    changed["spec"]["devices"]["requests"][0]["exactly"]["count"] = 2
    assert texts(s.validate_update(changed, claim))[0].startswith("spec: Invalid value: ")
    template = strategies.strategy_for(("resource.k8s.io", "v1", "resourceclaimtemplates"))
    rct = prepared(template, {"metadata": {"name": "t", "namespace": "default"}, "spec": {"spec": {"devices": {
        "requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.example.com"}}]}}}})
    assert rct["spec"]["spec"]["devices"]["requests"][0]["exactly"]["count"] == 1
    assert template.validate(rct) == []


def test_resource_slice_and_device_class(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("resource.k8s.io", "v1", "resourceslices"))
    assert s.tracks_generation
    rs = {"metadata": {"name": "node-1-gpu"}, "spec": {"driver": "gpu.example.com", "nodeName": "node-1",
                                                      "pool": {"name": "node-1", "resourceSliceCount": 1},
                                                      "devices": [{"name": "gpu-0"}]}}
    assert s.validate(rs) == []
    assert s.field_getters()["spec.nodeName"](rs) == "node-1"
    assert s.field_getters()["spec.driver"](rs) == "gpu.example.com"
    both = {"spec": {"driver": "gpu.example.com", "nodeName": "n", "allNodes": True,
                     "pool": {"name": "p", "resourceSliceCount": 0}, "devices": [{"name": "d"}, {"name": "d"}]}}
    assert texts(s.validate(both)) == [
        "spec.pool.resourceSliceCount: Invalid value: 0: must be greater than zero",
        'spec: Invalid value: "{`nodeName`, `allNodes`}": exactly one of `nodeName`, `nodeSelector`, `allNodes`, '
        "`perDeviceNodeSelection` is required, but multiple fields are set",
        'spec.devices[1].name: Duplicate value: "d"']
    moved = copy.deepcopy(rs)
    moved["spec"]["driver"] = "other.example.com"
    assert 'spec.driver: Invalid value: "other.example.com": field is immutable' in texts(s.validate_update(moved, rs))
    dc = strategies.strategy_for(("resource.k8s.io", "v1", "deviceclasses"))
    assert texts(dc.validate({"spec": {"selectors": [{}, {"cel": {"expression": " "}}]}})) == [
        "spec.selectors[0].cel: Required value", "spec.selectors[1].cel.expression: Required value"]


# --- storage.k8s.io ----------------------------------------------------------------------------------

def test_csi_driver(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("storage.k8s.io", "v1", "csidrivers"))
    driver = prepared(s, {"metadata": {"name": "hostpath.csi.k8s.io"}, "spec": {}})
    assert driver["spec"] == {"attachRequired": True, "podInfoOnMount": False, "storageCapacity": False,
                              "fsGroupPolicy": "ReadWriteOnceWithFSType", "requiresRepublish": False,
                              "seLinuxMount": False, "volumeLifecycleModes": ["Persistent"]}
    assert s.validate(driver) == []
    bad = copy.deepcopy(driver)
    bad["spec"].update(fsGroupPolicy="Sometimes", volumeLifecycleModes=["Forever"],
                       tokenRequests=[{"audience": "a", "expirationSeconds": 60}, {"audience": "a"}])
    assert texts(s.validate(bad)) == [
        'spec.fsGroupPolicy: Unsupported value: "Sometimes": supported values: "File", "None", '
        '"ReadWriteOnceWithFSType"',
        "spec.tokenRequests[0].expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes",
        'spec.tokenRequests[1].audience: Duplicate value: "a"',
        'spec.volumeLifecycleModes: Unsupported value: "Forever": supported values: "Persistent", "Ephemeral"']
    flipped = copy.deepcopy(driver)
    flipped["spec"]["attachRequired"] = False
    assert texts(s.validate_update(flipped, driver)) == ["spec.attachedRequired: Invalid value: false: field is "
                                                         "immutable"]


def test_csi_node_and_storage_capacity(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("storage.k8s.io", "v1", "csinodes"))
    node = {"metadata": {"name": "node-1"}, "spec": {"drivers": [
        {"name": "hostpath.csi.k8s.io", "nodeID": "node-1", "topologyKeys": ["topology.hostpath/node"],
         "allocatable": {"count": 10}}]}}
    assert s.validate(node) == []
    grown = copy.deepcopy(node)
    grown["spec"]["drivers"][0]["allocatable"]["count"] = 20
    assert s.validate_update(grown, node) == []
    renamed = copy.deepcopy(node)
    renamed["spec"]["drivers"][0]["nodeID"] = "other"
    assert texts(s.validate_update(renamed, node))[0].startswith("spec.drivers: Invalid value: ")
    assert texts(s.validate({"spec": {"drivers": [{"name": "Bad_Name", "nodeID": ""}]}})) == [
        'spec.drivers[0].name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of lower '
        "case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character "
        "(e.g. 'example.com', regex used for validation is "
        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        "spec.drivers[0].nodeID: Required value"]
    c = strategies.strategy_for(("storage.k8s.io", "v1", "csistoragecapacities"))
    capacity = {"metadata": {"name": "c", "namespace": "default"}, "storageClassName": "fast", "capacity": "10Gi",
                "nodeTopology": {"matchLabels": {"zone": "a"}}}
    assert c.validate(capacity) == []
    moved = {**copy.deepcopy(capacity), "storageClassName": "slow", "capacity": "5Gi"}
    assert texts(c.validate_update(moved, capacity)) == ['storageClassName: Invalid value: "slow": field is '
                                                         "immutable"]


def test_volume_attachment_and_attributes_class(strategies: StrategySet) -> None:
    s = strategies.strategy_for(("storage.k8s.io", "v1", "volumeattachments"))
    va = prepared(s, {"metadata": {"name": "va"}, "spec": {"attacher": "hostpath.csi.k8s.io", "nodeName": "node-1",
                                                          "source": {"persistentVolumeName": "pv-1"}}})
    assert va["status"] == {"attached": False}
    assert s.validate(va) == []
    assert texts(s.validate({"spec": {"source": {}}})) == [
        "spec.attacher: Required value",
        "spec.source: Required value: must specify exactly one of inlineVolumeSpec and persistentVolumeName",
        'spec.nodeName: Invalid value: "": a lowercase RFC 1123 subdomain must consist of lower case '
        "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. "
        "'example.com', regex used for validation is "
        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"]
    moved = copy.deepcopy(va)
    moved["spec"]["nodeName"] = "node-2"
    assert texts(s.validate_update(moved, va))[0].startswith("spec: Invalid value: ")
    vac = strategies.strategy_for(("storage.k8s.io", "v1", "volumeattributesclasses"))
    gold = {"metadata": {"name": "gold"}, "driverName": "pd.csi.storage.gke.io", "parameters": {"iops": "3000"}}
    assert vac.validate(gold) == []
    assert texts(vac.validate({"metadata": {"name": "x"}})) == [
        "driverName: Required value", "parameters: Required value: must contain at least one key/value pair"]
    faster = {**copy.deepcopy(gold), "parameters": {"iops": "6000"}}
    assert texts(vac.validate_update(faster, gold)) == ["parameters: Forbidden: updates to parameters are forbidden."]


# --- printers ----------------------------------------------------------------------------------------

def header(group: str, kind: str) -> list[str]:
    info = CATALOG.kind(group, "v1", kind)
    return [c["name"] for c in column_definitions(info) if c["priority"] == 0]


def cells(group: str, kind: str, obj: dict[str, Any]) -> list[Any]:
    info = CATALOG.kind(group, "v1", kind)
    obj = {**obj, "metadata": {"name": "x", "creationTimestamp": CREATED, **obj.get("metadata", {})}}
    return to_table(info, [obj], list_meta={}, now=NOW)["rows"][0]["cells"]


@pytest.mark.parametrize(("group", "kind", "columns"), [
    ("", "PodTemplate", ["Name", "Containers", "Images", "Pod Labels"]),
    ("", "ComponentStatus", ["Name", "Status", "Message", "Error"]),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration", ["Name", "Webhooks", "Age"]),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy", ["Name", "Validations", "ParamKind", "Age"]),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding", ["Name", "PolicyName", "ParamRef", "Age"]),
    ("apiregistration.k8s.io", "APIService", ["Name", "Service", "Available", "Age"]),
    ("certificates.k8s.io", "CertificateSigningRequest",
     ["Name", "Age", "SignerName", "Requestor", "RequestedDuration", "Condition"]),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema",
     ["Name", "PriorityLevel", "MatchingPrecedence", "DistinguisherMethod", "Age", "MissingPL"]),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration",
     ["Name", "Type", "NominalConcurrencyShares", "Queues", "HandSize", "QueueLengthLimit", "Age"]),
    ("networking.k8s.io", "IPAddress", ["Name", "ParentRef"]),
    ("networking.k8s.io", "ServiceCIDR", ["Name", "CIDRs", "Age"]),
    ("node.k8s.io", "RuntimeClass", ["Name", "Handler", "Age"]),
    ("resource.k8s.io", "ResourceClaim", ["Name", "State", "Age"]),
    ("resource.k8s.io", "ResourceSlice", ["Name", "Node", "Driver", "Pool", "Age"]),
    ("storage.k8s.io", "CSIDriver", ["Name", "AttachRequired", "PodInfoOnMount", "StorageCapacity", "TokenRequests",
                                     "RequiresRepublish", "Modes", "Age"]),
    ("storage.k8s.io", "CSIStorageCapacity", ["Name", "StorageClassName", "Capacity"]),
    ("storage.k8s.io", "VolumeAttachment", ["Name", "Attacher", "PV", "Node", "Attached", "Age"]),
])
def test_columns_as_upstream_prints_them(group: str, kind: str, columns: list[str]) -> None:
    assert header(group, kind) == columns


def test_printed_cells() -> None:
    template = {"template": {"metadata": {"labels": {"b": "2", "a": "1"}},
                             "spec": {"containers": [{"name": "c", "image": "nginx"},
                                                     {"name": "d", "image": "redis"}]}}}
    assert cells("", "PodTemplate", template) == ["x", "c,d", "nginx,redis", "a=1,b=2"]
    assert cells("admissionregistration.k8s.io", "ValidatingAdmissionPolicy", {"spec": {
        "validations": [{}, {}], "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"}}}) == [
        "x", 2, "v1/ConfigMap", "5m"]
    selector_ref = {"selector": {"matchLabels": {"b": "2", "a": "1"}, "matchExpressions": [
        {"key": "k", "operator": "In", "values": ["v", "w"]}]}}
    assert cells("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding", {"spec": {
        "policyName": "p", "paramRef": selector_ref}})[2] == (
        "&LabelSelector{MatchLabels:map[string]string{a: 1,b: 2,},MatchExpressions:[]LabelSelectorRequirement{"
        "LabelSelectorRequirement{Key:k,Operator:In,Values:[v w],},},}")
    assert cells("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding", {"spec": {
        "policyName": "p", "paramRef": {"name": "limits"}}})[1:3] == ["p", "*/limits"]
    assert cells("apiregistration.k8s.io", "APIService", {"spec": {"service": {"namespace": "kube-system",
                                                                             "name": "metrics"}},
                                                        "status": {"conditions": [{
                                                            "type": "Available", "status": "False",
                                                            "reason": "MissingEndpoints"}]}}) == [
        "x", "kube-system/metrics", "False (MissingEndpoints)", "5m"]
    assert cells("apiregistration.k8s.io", "APIService", {"spec": {}})[1:3] == ["Local", "Unknown"]
    csr = {"spec": {"signerName": "example.com/s", "username": "alice", "expirationSeconds": 3600},
           "status": {"conditions": [{"type": "Approved"}, {"type": "Failed"}], "certificate": "AAAA"}}
    assert cells("certificates.k8s.io", "CertificateSigningRequest", csr) == [
        "x", "5m", "example.com/s", "alice", "60m", "Approved,Failed,Issued"]
    assert cells("certificates.k8s.io", "CertificateSigningRequest", {"spec": {}})[2:] == [
        "<none>", "", "<none>", "Pending"]
    assert cells("flowcontrol.apiserver.k8s.io", "FlowSchema", {"spec": {
        "priorityLevelConfiguration": {"name": "global-default"}, "matchingPrecedence": 9900}}) == [
        "x", "global-default", 9900, "<none>", "5m", "?"]
    assert cells("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration", {"spec": {
        "type": "Limited", "limited": {"nominalConcurrencyShares": 30, "limitResponse": {"type": "Queue", "queuing": {
            "queues": 64, "handSize": 6, "queueLengthLimit": 50}}}}}) == ["x", "Limited", 30, 64, 6, 50, "5m"]
    assert cells("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration", {"spec": {"type": "Exempt"}}) == [
        "x", "Exempt", "<none>", "<none>", "<none>", "<none>", "5m"]
    assert cells("networking.k8s.io", "IPAddress", {"spec": {"parentRef": {
        "group": "", "resource": "services", "namespace": "default", "name": "web"}}}) == ["x", "services/default/web"]
    assert cells("networking.k8s.io", "IPAddress", {"spec": {"parentRef": {
        "group": "gateway.networking.k8s.io", "resource": "Gateways", "name": "gw"}}})[1] == (
        "gateways.gateway.networking.k8s.io/gw")
    assert cells("resource.k8s.io", "ResourceClaim", {"status": {"allocation": {}, "reservedFor": [{}]}})[1] == (
        "allocated,reserved")
    assert cells("resource.k8s.io", "ResourceClaim", {"metadata": {"deletionTimestamp": CREATED}})[1] == "deleted"
    assert cells("storage.k8s.io", "CSIDriver", {"spec": {"tokenRequests": [{"audience": "a"}, {"audience": "b"}],
                                                         "volumeLifecycleModes": ["Persistent", "Ephemeral"]}}) == [
        "x", True, False, False, "a,b", False, "Persistent,Ephemeral", "5m"]
    assert cells("storage.k8s.io", "CSIStorageCapacity", {"storageClassName": "fast"}) == ["x", "fast", "<unset>"]
    assert cells("storage.k8s.io", "VolumeAttributesClass", {
        "metadata": {"annotations": {"volumeattributesclass.kubernetes.io/is-default-class": "true"}},
        "driverName": "d"})[:2] == ["x (default)", "d"]
