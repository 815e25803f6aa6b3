"""The built-in kinds added for 1.37 parity, through the real kubectl: discovery, create/get/apply/delete of
one of each from YAML, `kubectl certificate approve|deny`, and 422s with upstream's messages."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import pytest
import yaml
from cluster import Cluster
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ALL_VERBS = "create,delete,deletecollection,get,list,patch,update,watch"

# `kubectl api-resources -o wide` rows of a 1.37 cluster: name -> (short names, apiVersion, namespaced, kind,
# categories).
API_RESOURCES = {
    "podtemplates": ("", "v1", "true", "PodTemplate", ""),
    "mutatingwebhookconfigurations": ("", "admissionregistration.k8s.io/v1", "false",
                                      "MutatingWebhookConfiguration", "api-extensions"),
    "validatingadmissionpolicies": ("", "admissionregistration.k8s.io/v1", "false", "ValidatingAdmissionPolicy",
                                    "api-extensions"),
    "validatingadmissionpolicybindings": ("", "admissionregistration.k8s.io/v1", "false",
                                          "ValidatingAdmissionPolicyBinding", "api-extensions"),
    "validatingwebhookconfigurations": ("", "admissionregistration.k8s.io/v1", "false",
                                        "ValidatingWebhookConfiguration", "api-extensions"),
    "apiservices": ("", "apiregistration.k8s.io/v1", "false", "APIService", "api-extensions"),
    "certificatesigningrequests": ("csr", "certificates.k8s.io/v1", "false", "CertificateSigningRequest", ""),
    "flowschemas": ("", "flowcontrol.apiserver.k8s.io/v1", "false", "FlowSchema", ""),
    "prioritylevelconfigurations": ("", "flowcontrol.apiserver.k8s.io/v1", "false", "PriorityLevelConfiguration",
                                    ""),
    "ipaddresses": ("ip", "networking.k8s.io/v1", "false", "IPAddress", ""),
    "servicecidrs": ("", "networking.k8s.io/v1", "false", "ServiceCIDR", ""),
    "runtimeclasses": ("", "node.k8s.io/v1", "false", "RuntimeClass", ""),
    "deviceclasses": ("", "resource.k8s.io/v1", "false", "DeviceClass", ""),
    "resourceclaims": ("", "resource.k8s.io/v1", "true", "ResourceClaim", ""),
    "resourceclaimtemplates": ("", "resource.k8s.io/v1", "true", "ResourceClaimTemplate", ""),
    "resourceslices": ("", "resource.k8s.io/v1", "false", "ResourceSlice", ""),
    "csidrivers": ("", "storage.k8s.io/v1", "false", "CSIDriver", ""),
    "csinodes": ("", "storage.k8s.io/v1", "false", "CSINode", ""),
    "csistoragecapacities": ("", "storage.k8s.io/v1", "true", "CSIStorageCapacity", ""),
    "volumeattachments": ("", "storage.k8s.io/v1", "false", "VolumeAttachment", ""),
    "volumeattributesclasses": ("vac", "storage.k8s.io/v1", "false", "VolumeAttributesClass", ""),
}

# The `kubectl get` header of each kind, as upstream's printers make it.
HEADERS = {
    "PodTemplate": "NAME CONTAINERS IMAGES POD LABELS",
    "MutatingWebhookConfiguration": "NAME WEBHOOKS AGE",
    "ValidatingWebhookConfiguration": "NAME WEBHOOKS AGE",
    "ValidatingAdmissionPolicy": "NAME VALIDATIONS PARAMKIND AGE",
    "ValidatingAdmissionPolicyBinding": "NAME POLICYNAME PARAMREF AGE",
    "APIService": "NAME SERVICE AVAILABLE AGE",
    "CertificateSigningRequest": "NAME AGE SIGNERNAME REQUESTOR REQUESTEDDURATION CONDITION",
    "FlowSchema": "NAME PRIORITYLEVEL MATCHINGPRECEDENCE DISTINGUISHERMETHOD AGE MISSINGPL",
    "PriorityLevelConfiguration": "NAME TYPE NOMINALCONCURRENCYSHARES QUEUES HANDSIZE QUEUELENGTHLIMIT AGE",
    "IPAddress": "NAME PARENTREF",
    "ServiceCIDR": "NAME CIDRS AGE",
    "RuntimeClass": "NAME HANDLER AGE",
    "DeviceClass": "NAME AGE",
    "ResourceClaim": "NAME STATE AGE",
    "ResourceClaimTemplate": "NAME AGE",
    "ResourceSlice": "NAME NODE DRIVER POOL AGE",
    "CSIDriver": "NAME ATTACHREQUIRED PODINFOONMOUNT STORAGECAPACITY TOKENREQUESTS REQUIRESREPUBLISH MODES AGE",
    "CSINode": "NAME DRIVERS AGE",
    "CSIStorageCapacity": "NAME STORAGECLASSNAME CAPACITY",
    "VolumeAttachment": "NAME ATTACHER PV NODE ATTACHED AGE",
    "VolumeAttributesClass": "NAME DRIVERNAME AGE",
}


def csr_request(common_name: str) -> str:
    """A signed PKCS#10 request, base64 of its PEM as spec.request carries it."""
    key = ec.generate_private_key(ec.SECP256R1())
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .sign(key, hashes.SHA256()))
    return base64.b64encode(request.public_bytes(serialization.Encoding.PEM)).decode()


def manifests(ns: str, tag: str) -> list[dict]:
    """One object of each new kind; cluster-scoped names carry `tag` so reruns against one server differ."""
    rules = [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]
    hook = {"name": "check.example.com", "sideEffects": "None", "admissionReviewVersions": ["v1"], "rules": rules,
            "clientConfig": {"service": {"name": "hook", "namespace": ns, "path": "/check"}}}
    claim_spec = {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": f"gpu-{tag}"}}]}}
    return [
        {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "tpl", "namespace": ns},
         "template": {"metadata": {"labels": {"app": "web"}},
                      "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
         "metadata": {"name": f"mutate-{tag}"}, "webhooks": [hook]},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
         "metadata": {"name": f"validate-{tag}"}, "webhooks": [hook]},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
         "metadata": {"name": f"policy-{tag}"}, "spec": {
             "matchConstraints": {"resourceRules": rules}, "validations": [{"expression": "true"}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
         "metadata": {"name": f"binding-{tag}"}, "spec": {"policyName": f"policy-{tag}",
                                                         "validationActions": ["Deny"]}},
        {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
         "metadata": {"name": f"v1alpha1.{tag}.example.com"}, "spec": {
             "group": f"{tag}.example.com", "version": "v1alpha1", "groupPriorityMinimum": 1000,
             "versionPriority": 15, "insecureSkipTLSVerify": True,
             "service": {"name": "api", "namespace": ns}}},
        {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
         "metadata": {"name": f"csr-{tag}"}, "spec": {
             "request": csr_request("alice"), "signerName": "example.com/signer", "usages": ["client auth"],
             "expirationSeconds": 86400}},
        {"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
         "metadata": {"name": f"level-{tag}"}, "spec": {"type": "Limited", "limited": {
             "limitResponse": {"type": "Queue", "queuing": {}}}}},
        {"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
         "metadata": {"name": f"schema-{tag}"}, "spec": {
             "priorityLevelConfiguration": {"name": f"level-{tag}"}, "distinguisherMethod": {"type": "ByUser"},
             "rules": [{"subjects": [{"kind": "Group", "group": {"name": "system:authenticated"}}],
                        "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                           "namespaces": ["*"]}]}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "IPAddress",
         "metadata": {"name": f"192.0.2.{int(tag, 16) % 250 + 1}"},
         "spec": {"parentRef": {"group": "", "resource": "services", "namespace": ns, "name": "web"}}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR", "metadata": {"name": f"cidr-{tag}"},
         "spec": {"cidrs": ["10.250.0.0/24"]}},
        {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": f"runtime-{tag}"},
         "handler": "crun"},
        {"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": f"gpu-{tag}"},
         "spec": {"selectors": [{"cel": {"expression": "device.driver == 'gpu.example.com'"}}]}},
        {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "metadata": {"name": "claim", "namespace": ns},
         "spec": claim_spec},
        {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
         "metadata": {"name": "claims", "namespace": ns}, "spec": {"spec": claim_spec}},
        {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"name": f"slice-{tag}"},
         "spec": {"driver": "gpu.example.com", "nodeName": "node-a", "pool": {"name": "node-a",
                                                                            "resourceSliceCount": 1},
                  "devices": [{"name": "gpu-0"}]}},
        {"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver", "metadata": {"name": f"{tag}.csi.example.com"},
         "spec": {"attachRequired": False}},
        {"apiVersion": "storage.k8s.io/v1", "kind": "CSINode", "metadata": {"name": f"node-{tag}"},
         "spec": {"drivers": [{"name": f"{tag}.csi.example.com", "nodeID": "node-a"}]}},
        {"apiVersion": "storage.k8s.io/v1", "kind": "CSIStorageCapacity",
         "metadata": {"name": "capacity", "namespace": ns}, "storageClassName": "fast", "capacity": "10Gi"},
        {"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment", "metadata": {"name": f"attach-{tag}"},
         "spec": {"attacher": f"{tag}.csi.example.com", "nodeName": "node-a",
                  "source": {"persistentVolumeName": "pv-a"}}},
        {"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttributesClass", "metadata": {"name": f"gold-{tag}"},
         "driverName": f"{tag}.csi.example.com", "parameters": {"iops": "3000"}},
    ]


def write_yaml(path: Path, objects: list[dict]) -> Path:
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return path


def test_api_resources_list_the_new_kinds(cluster: Cluster) -> None:
    rows = {}
    for line in cluster.kubectl("api-resources", "-o", "wide").stdout.splitlines()[1:]:
        fields = line.split()
        rows.setdefault(fields[0], []).append(fields)
    for name, (short, api_version, namespaced, kind, categories) in API_RESOURCES.items():
        expected = [name, *([short] if short else []), api_version, namespaced, kind, ALL_VERBS,
                    *([categories] if categories else [])]
        assert expected in rows[name], (name, rows.get(name))
    groups = [g["name"] for g in json.loads(cluster.kubectl("get", "--raw", "/apis").stdout)["groups"]]
    assert groups[:3] == ["apiregistration.k8s.io", "apps", "events.k8s.io"]
    assert groups.index("certificates.k8s.io") < groups.index("admissionregistration.k8s.io") < groups.index(
        "resource.k8s.io")


def test_create_get_apply_delete_one_of_each(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    objects = manifests(namespace, tag)
    manifest = write_yaml(tmp_path / "kinds.yaml", objects)
    created = cluster.kubectl("create", "-f", str(manifest)).stdout.splitlines()
    assert len(created) == len(objects) and all(line.endswith(" created") for line in created)

    # One table per kind, each with upstream's columns (kubectl prints a header per kind).
    printed = cluster.kubectl("get", "-f", str(manifest)).stdout.strip().split("\n\n")
    headers = sorted(" ".join(block.splitlines()[0].split()) for block in printed)
    assert headers == sorted(HEADERS[o["kind"]] for o in objects)
    rows = {block.splitlines()[1].split()[0].split("/")[0]: block.splitlines()[1].split() for block in printed}
    requester = json.loads(cluster.kubectl("auth", "whoami", "-o", "json").stdout)["status"]["userInfo"]["username"]
    assert rows["certificatesigningrequest.certificates.k8s.io"][2:] == [
        "example.com/signer", requester, "24h", "Pending"]
    assert rows["podtemplate"][1:] == ["web", "nginx:1.27", "app=web"]
    assert rows["runtimeclass.node.k8s.io"][1] == "crun"
    assert rows["ipaddress.networking.k8s.io"][1] == f"services/{namespace}/web"

    for obj in objects:
        obj["metadata"]["labels"] = {"applied": "yes"}
    applied = cluster.kubectl("apply", "-f", str(write_yaml(tmp_path / "applied.yaml", objects))).stdout
    assert applied.count(" configured") == len(objects), applied
    labelled = json.loads(cluster.kubectl("get", "-f", str(manifest), "-o", "json").stdout)["items"]
    assert all(item["metadata"]["labels"] == {"applied": "yes"} for item in labelled)

    deleted = cluster.kubectl("delete", "-f", str(manifest)).stdout.splitlines()
    assert len(deleted) == len(objects) and all(" deleted" in line for line in deleted)
    assert cluster.kubectl("get", "-f", str(manifest), "--ignore-not-found").stdout == ""


def test_certificate_approve_and_deny(cluster: Cluster, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    requests = [{"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
                 "metadata": {"name": f"{verdict}-{tag}"},
                 "spec": {"request": csr_request(verdict), "signerName": "example.com/signer",
                          "usages": ["client auth"], "username": "someone-else"}}
                for verdict in ("approve", "deny")]
    cluster.kubectl("create", "-f", str(write_yaml(tmp_path / "csr.yaml", requests)))
    whoami = json.loads(cluster.kubectl("auth", "whoami", "-o", "json").stdout)["status"]["userInfo"]
    csr = json.loads(cluster.kubectl("get", "csr", f"approve-{tag}", "-o", "json").stdout)
    assert csr["spec"]["username"] == whoami["username"]
    assert csr["spec"]["groups"] == whoami["groups"]

    assert "approved" in cluster.kubectl("certificate", "approve", f"approve-{tag}").stdout
    assert "denied" in cluster.kubectl("certificate", "deny", f"deny-{tag}").stdout
    approved = json.loads(cluster.kubectl("get", "csr", f"approve-{tag}", "-o", "json").stdout)
    condition = approved["status"]["conditions"][0]
    assert (condition["type"], condition["status"], condition["reason"]) == ("Approved", "True", "KubectlApprove")
    assert condition["lastTransitionTime"] and condition["lastUpdateTime"]
    table = cluster.kubectl("get", "csr", f"approve-{tag}", f"deny-{tag}").stdout.splitlines()
    assert [row.split()[-1] for row in table[1:]] == ["Approved", "Denied"]
    # A decision stands: kubectl refuses to deny an approved request, and /status cannot add an approval.
    refused = cluster.kubectl("certificate", "deny", f"approve-{tag}", check=False)
    assert refused.returncode != 0 and "is already Approved" in refused.stderr
    via_status = json.loads(cluster.kubectl("get", "csr", f"deny-{tag}", "-o", "json").stdout)
    via_status["status"]["conditions"].append({"type": "Approved", "status": "True"})
    response = cluster.request("PUT", f"/apis/certificates.k8s.io/v1/certificatesigningrequests/deny-{tag}/status",
                               via_status)
    assert response.status == 422
    assert response.json()["details"]["causes"][0]["message"] == (
        'Invalid value: "Approved": Approved and Denied conditions are mutually exclusive')
    cluster.kubectl("delete", "csr", f"approve-{tag}", f"deny-{tag}")


INVALID = [
    ({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "no-handler"}},
     'RuntimeClass.node.k8s.io "no-handler" is invalid: handler: Invalid value: "": a lowercase RFC 1123 label '
     "must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric "
     "character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
    ({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {"name": "bad"},
      "spec": {"request": base64.b64encode(b"hello").decode(), "usages": ["client auth"]}},
     'CertificateSigningRequest.certificates.k8s.io "bad" is invalid: [spec.request: Invalid value: "aGVsbG8=": '
     "PEM block type must be CERTIFICATE REQUEST, spec.signerName: Required value]"),
    ({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
      "metadata": {"name": "short"}, "webhooks": [{"name": "check", "sideEffects": "None",
                                                   "admissionReviewVersions": ["v1"],
                                                   "clientConfig": {"url": "https://hooks.example.com"}}]},
     'ValidatingWebhookConfiguration.admissionregistration.k8s.io "short" is invalid: webhooks[0].name: Invalid '
     'value: "check": should be a domain with at least three segments separated by dots'),
    ({"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema", "metadata": {"name": "late"},
      "spec": {"priorityLevelConfiguration": {"name": "global-default"}, "matchingPrecedence": 20000}},
     'FlowSchema.flowcontrol.apiserver.k8s.io "late" is invalid: spec.matchingPrecedence: Invalid value: 20000: '
     "must not be greater than 10000"),
    ({"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR", "metadata": {"name": "wide"},
      "spec": {"cidrs": ["10.0.0.1/8"]}},
     'ServiceCIDR.networking.k8s.io "wide" is invalid: spec.cidrs[0]: Invalid value: "10.0.0.1/8": must not have '
     "bits set beyond the prefix length"),
]


@pytest.mark.parametrize(("obj", "message"), INVALID, ids=[o["kind"] for o, _ in INVALID])
def test_invalid_objects_are_refused_with_upstreams_message(cluster: Cluster, obj: dict, message: str) -> None:
    plural = next(name for name, row in API_RESOURCES.items() if row[3] == obj["kind"])
    response = cluster.request("POST", f"/apis/{obj['apiVersion']}/{plural}", obj)
    assert response.status == 422
    status = response.json()
    assert (status["reason"], status["message"]) == ("Invalid", message)
    # kubectl words it as it does for upstream: the kind without its group.
    result = cluster.kubectl("create", "-f", "-", input=json.dumps(obj), check=False)
    assert result.returncode != 0
    kind_and_name = f'{obj["kind"]} "{obj["metadata"]["name"]}"'
    assert result.stderr.startswith(f"The {kind_and_name} is invalid: ")
