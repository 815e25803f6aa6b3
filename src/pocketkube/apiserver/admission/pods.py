"""The pod admission plugins every cluster runs (plugin/pkg/admission/...):

- ServiceAccount: a pod runs as the `default` account unless it names one, and the account must exist;
  unless automountServiceAccountToken says no, every container gets the kube-api-access-* projected volume
  (a bound token, the cluster CA, the namespace) at /var/run/secrets/kubernetes.io/serviceaccount.
- DefaultTolerationSeconds: pods tolerate not-ready/unreachable nodes for 300 s unless they say otherwise.
- Priority: spec.priority and spec.preemptionPolicy come from the pod's PriorityClass (or the global
  default class); only one PriorityClass may be the global default.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from pocketkube.api import errors
from pocketkube.api.names import random_suffix
from pocketkube.apiserver.strategies.core_pods import MIRROR_POD_ANNOTATION

from .interfaces import CREATE, UPDATE, AdmissionAttributes, Handler, forbidden
from .state import ClusterState

Obj = dict[str, Any]

DEFAULT_SERVICE_ACCOUNT = "default"
# The default account is made by the serviceaccount controller moments after its namespace: look for it
# this many times before refusing (other accounts are looked up once), as upstream.
_DEFAULT_ACCOUNT_ATTEMPTS = 10

TOKEN_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_VOLUME_PREFIX = "kube-api-access-"
# upstream's utilrand.String alphabet: no vowels (no words), no confusable characters
# A little over an hour: kubelets refresh the token long before; upstream picks 3607 so that its
# "stale token" warnings can tell these tokens from ones a user asked for.
TOKEN_EXPIRATION_SECONDS = 3607

DEFAULT_TOLERATION_SECONDS = 300
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"

# scheduling.DefaultPriorityWhenNoDefaultClassExists
DEFAULT_PRIORITY = 0
PREEMPT_LOWER_PRIORITY = "PreemptLowerPriority"


def _pod_spec(attrs: AdmissionAttributes) -> Obj | None:
    obj = attrs.object
    if obj is None or not isinstance(obj.get("spec"), dict):
        return None
    return obj["spec"]


class ServiceAccount(Handler):
    name = "ServiceAccount"
    operations = (CREATE,)

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self._accounts = state.info("", "v1", "serviceaccounts")

    def _ignored(self, attrs: AdmissionAttributes) -> bool:
        return not attrs.is_resource("", "pods") or bool(attrs.subresource) or _pod_spec(attrs) is None

    @staticmethod
    def _is_mirror(attrs: AdmissionAttributes) -> bool:
        assert attrs.object is not None
        return MIRROR_POD_ANNOTATION in ((attrs.object.get("metadata") or {}).get("annotations") or {})

    async def admit(self, attrs: AdmissionAttributes) -> None:
        if self._ignored(attrs) or self._is_mirror(attrs):
            return  # a mirror pod's spec is the kubelet's: never changed, only validated
        spec = _pod_spec(attrs)
        assert spec is not None
        if not spec.get("serviceAccountName"):
            spec["serviceAccountName"] = DEFAULT_SERVICE_ACCOUNT
        # serviceAccount is the deprecated alias the v1 API always shows next to serviceAccountName.
        spec["serviceAccount"] = spec["serviceAccountName"]
        account = await self._service_account(attrs, spec["serviceAccountName"])
        if not spec.get("imagePullSecrets") and account.get("imagePullSecrets"):
            spec["imagePullSecrets"] = [{"name": s.get("name", "")} for s in account["imagePullSecrets"]]
        automount = spec.get("automountServiceAccountToken")
        if automount is None:
            automount = account.get("automountServiceAccountToken")
        if automount is not False:
            _mount_token_volume(spec)

    async def validate(self, attrs: AdmissionAttributes) -> None:
        if self._ignored(attrs):
            return
        spec = _pod_spec(attrs)
        assert spec is not None
        if self._is_mirror(attrs):
            if spec.get("serviceAccountName"):
                raise forbidden(attrs, "a mirror pod may not reference service accounts")
            if _references_secrets(spec):
                raise forbidden(attrs, "a mirror pod may not reference secrets")
            if any("serviceAccountToken" in source for vol in spec.get("volumes") or []
                   for source in ((vol or {}).get("projected") or {}).get("sources") or []):
                raise forbidden(attrs, "a mirror pod may not use ServiceAccountToken volume projections")
            return
        account = spec.get("serviceAccountName")
        if not account:
            pod_name = (attrs.object or {}).get("metadata", {}).get("name", "")
            raise forbidden(attrs, f"no service account specified for pod {attrs.namespace}/{pod_name}")
        await self._service_account(attrs, account)

    async def _service_account(self, attrs: AdmissionAttributes, name: str) -> Obj:
        """The account from the cache, else read live (repeatedly for `default`), else 403."""
        account = self.state.get(self._accounts, attrs.namespace, name)
        attempts = _DEFAULT_ACCOUNT_ATTEMPTS if name == DEFAULT_SERVICE_ACCOUNT else 1
        interval = random.uniform(0.1, 0.2)
        for attempt in range(attempts):
            if account is not None:
                return account
            if attempt:
                await asyncio.sleep(interval)
            await self.state.fresh()
            account = self.state.get(self._accounts, attrs.namespace, name)
        if account is not None:
            return account
        raise forbidden(attrs, f"error looking up service account {attrs.namespace}/{name}: "
                               f'serviceaccount "{name}" not found')


def _token_volume(name: str) -> Obj:
    return {"name": name, "projected": {"defaultMode": 0o644, "sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1",
                                                                     "fieldPath": "metadata.namespace"}}]}},
    ]}}


def _mount_token_volume(spec: Obj) -> None:
    """mountServiceAccountToken: the kube-api-access volume (reused when the pod already has one) mounted
    read-only in every container that mounts nothing at the token path itself."""
    volumes = spec.setdefault("volumes", [])
    name = next((v.get("name") for v in volumes if str((v or {}).get("name", "")).startswith(TOKEN_VOLUME_PREFIX)),
                None)
    if name is None:
        name = TOKEN_VOLUME_PREFIX + random_suffix()
        volumes.append(_token_volume(name))
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            mounts = container.setdefault("volumeMounts", [])
            if not any((m or {}).get("mountPath") == TOKEN_MOUNT_PATH for m in mounts):
                mounts.append({"name": name, "readOnly": True, "mountPath": TOKEN_MOUNT_PATH})


def _references_secrets(spec: Obj) -> bool:
    """podutil.VisitPodSecretNames found anything: pull secrets, secret volumes, env from secrets."""
    if spec.get("imagePullSecrets"):
        return True
    for vol in spec.get("volumes") or []:
        vol = vol or {}
        if "secret" in vol or any("secret" in s for s in (vol.get("projected") or {}).get("sources") or []):
            return True
        for kind in ("cephfs", "cinder", "flexVolume", "azureFile", "iscsi", "rbd", "scaleIO", "storageos",
                     "csi"):
            if ((vol.get(kind) or {}).get("secretRef") or (vol.get(kind) or {}).get("nodePublishSecretRef")):
                return True
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(kind) or []:
            for env_from in (c or {}).get("envFrom") or []:
                if (env_from or {}).get("secretRef"):
                    return True
            for env in (c or {}).get("env") or []:
                if ((env or {}).get("valueFrom") or {}).get("secretKeyRef"):
                    return True
    return False


class DefaultTolerationSeconds(Handler):
    name = "DefaultTolerationSeconds"
    operations = (CREATE, UPDATE)

    def __init__(self, seconds: int = DEFAULT_TOLERATION_SECONDS) -> None:
        self.seconds = seconds

    async def admit(self, attrs: AdmissionAttributes) -> None:
        if not attrs.is_resource("", "pods") or attrs.subresource:
            return
        spec = _pod_spec(attrs)
        if spec is None:
            raise errors.bad_request(f"expected a Pod but got {(attrs.object or {}).get('kind')}")
        tolerations = spec.get("tolerations") or []
        for key in (NOT_READY_TAINT, UNREACHABLE_TAINT):
            # An empty key tolerates every taint; an empty effect every effect.
            if not any((t or {}).get("key") in (key, "", None) and (t or {}).get("effect") in ("NoExecute", "", None)
                       for t in tolerations):
                tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute",
                                    "tolerationSeconds": self.seconds})
        spec["tolerations"] = tolerations


class Priority(Handler):
    name = "Priority"
    operations = (CREATE, UPDATE)

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self._classes = state.info("scheduling.k8s.io", "v1", "priorityclasses")

    def _default_class(self) -> Obj | None:
        """The global default class; when a race made several, the one of lowest value (as upstream)."""
        found: Obj | None = None
        for pc in self.state.list(self._classes):
            if pc.get("globalDefault") and (found is None or int(found.get("value") or 0) > int(pc.get("value") or 0)):
                found = pc
        return found

    async def admit(self, attrs: AdmissionAttributes) -> None:
        if attrs.subresource or not attrs.is_resource("", "pods"):
            return
        spec = _pod_spec(attrs)
        if spec is None:
            raise errors.bad_request("resource was marked with kind Pod but was unable to be converted")
        if attrs.operation == UPDATE:
            # Keep what admission set at creation; validation refuses any other change to these fields.
            old_spec = (attrs.old_object or {}).get("spec") or {}
            for field in ("priority", "preemptionPolicy"):
                if spec.get(field) is None and old_spec.get(field) is not None:
                    spec[field] = old_spec[field]
            return
        class_name = spec.get("priorityClassName") or ""
        if not class_name:
            pc = self._default_class()
            if pc is not None:
                spec["priorityClassName"] = pc["metadata"]["name"]
                priority, policy = int(pc.get("value") or 0), pc.get("preemptionPolicy")
            else:
                priority, policy = DEFAULT_PRIORITY, PREEMPT_LOWER_PRIORITY
        else:
            pc = await self.state.get_fresh(self._classes, "", class_name)
            if pc is None:
                raise forbidden(attrs, f"no PriorityClass with name {class_name} was found")
            priority, policy = int(pc.get("value") or 0), pc.get("preemptionPolicy")
        given = spec.get("priority")
        if given is not None and given != priority:
            raise forbidden(attrs, f"the integer value of priority ({given}) must not be provided in pod spec; "
                                   f"priority admission controller computed {priority} from the given "
                                   f"PriorityClass name")
        spec["priority"] = priority
        if policy:
            given_policy = spec.get("preemptionPolicy")
            if given_policy and given_policy != policy:
                raise forbidden(attrs, f"the string value of PreemptionPolicy ({given_policy}) must not be "
                                       f"provided in pod spec; priority admission controller computed {policy} "
                                       f"from the given PriorityClass name")
            spec["preemptionPolicy"] = policy

    async def validate(self, attrs: AdmissionAttributes) -> None:
        if attrs.subresource or not attrs.is_resource("scheduling.k8s.io", "priorityclasses"):
            return
        pc = attrs.object or {}
        if not pc.get("globalDefault"):
            return
        current = self._default_class()
        if current is None:
            return
        current_name = current["metadata"]["name"]
        if attrs.operation == CREATE or current_name != (pc.get("metadata") or {}).get("name"):
            raise forbidden(attrs, f"PriorityClass {current_name} is already marked as default. Only one "
                                   f"default can exist")
