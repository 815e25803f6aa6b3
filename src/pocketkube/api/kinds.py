"""The catalogue of built-in resources: group/version/kind, names, scope, verbs, subresources.

Discovery, the generic registry, OpenAPI and table printing all read this one table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUBRESOURCE_VERBS = {
    "status": ("get", "patch", "update"),
    "scale": ("get", "patch", "update"),
    "binding": ("create",),
    "eviction": ("create",),
    "token": ("create",),
    "approval": ("get", "patch", "update"),
    "ephemeralcontainers": ("get", "patch", "update"),
}

# Go package of each group's types, as named in the OpenAPI definitions (io.k8s.api.<pkg>.<version>.<Kind>).
_DEFINITION_PACKAGE = {
    "": "core",
    "apps": "apps",
    "batch": "batch",
    "autoscaling": "autoscaling",
    "networking.k8s.io": "networking",
    "storage.k8s.io": "storage",
    "rbac.authorization.k8s.io": "rbac",
    "authentication.k8s.io": "authentication",
    "authorization.k8s.io": "authorization",
    "coordination.k8s.io": "coordination",
    "discovery.k8s.io": "discovery",
    "policy": "policy",
    "scheduling.k8s.io": "scheduling",
    "events.k8s.io": "events",
    "admissionregistration.k8s.io": "admissionregistration",
    "certificates.k8s.io": "certificates",
    "flowcontrol.apiserver.k8s.io": "flowcontrol",
    "node.k8s.io": "node",
    "resource.k8s.io": "resource",
}
# Groups whose types live outside k8s.io/api: their definitions carry the serving library's Go package.
_DEFINITION_PREFIX = {
    "apiextensions.k8s.io": "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions",
    "apiregistration.k8s.io": "io.k8s.kube-aggregator.pkg.apis.apiregistration",
}

# The order kube-apiserver lists API groups in (its APIService group priorities, highest first; ties by
# name), the core group first. Groups not named here (custom resources) follow.
GROUP_ORDER = (
    "", "apiregistration.k8s.io", "apps", "events.k8s.io", "authentication.k8s.io", "authorization.k8s.io",
    "autoscaling", "batch", "certificates.k8s.io", "networking.k8s.io", "policy", "rbac.authorization.k8s.io",
    "storage.k8s.io", "admissionregistration.k8s.io", "apiextensions.k8s.io", "scheduling.k8s.io",
    "coordination.k8s.io", "node.k8s.io", "discovery.k8s.io", "flowcontrol.apiserver.k8s.io", "resource.k8s.io",
)


@dataclass(frozen=True)
class CustomResource:
    """What a custom resource (one served version of a CRD) adds to its ResourceInfo.

    Schemas and columns are kept as JSON text so the record stays hashable and compares by content
    (the OpenAPI cache is keyed by the catalogue's contents).
    """

    crd_name: str
    list_kind: str
    schema_json: str = "{}"  # the version's openAPIV3Schema
    columns_json: str = "[]"  # the version's additionalPrinterColumns (defaulted as upstream serves them)
    spec_replicas_path: str = ""  # scale subresource paths (".spec.replicas"), empty without scale
    status_replicas_path: str = ""
    label_selector_path: str = ""
    selectable_fields: tuple[str, ...] = ()  # JSON paths usable in fieldSelector
    terminating: bool = False  # the CRD is being deleted: no new objects
    # Every version of the CRD, served or not, in the CRD's order: (name, openAPIV3Schema as schema_json spells
    # it) and (name, scale specReplicasPath or ""). Conversion prunes with the target version's schema, reads
    # from storage use the stored version's, and managedFields written through /scale map the replicas path.
    version_schemas: tuple[tuple[str, str], ...] = ()
    version_replicas_paths: tuple[tuple[str, str], ...] = ()

    @staticmethod
    def definition_name(group: str, version: str, kind: str) -> str:
        """Upstream's REST-friendly OpenAPI name: reversed group, version, kind (com.example.stable.v1.CronTab)."""
        return ".".join(reversed(group.split("."))) + f".{version}.{kind}"


@dataclass(frozen=True)
class ResourceInfo:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    # Several group-versions may share one stored resource (events, HPAs): they name the same storage.
    storage_group: str | None = None
    storage_version: str | None = None
    single_name: str = field(default="")
    custom: CustomResource | None = None  # set for custom resources (served from a CRD)
    # A deprecated API's warning, sent with every answer about the resource (upstream's installer does so).
    deprecation: str = ""

    @property
    def singular(self) -> str:
        return self.single_name or self.kind.lower()

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return self.custom.list_kind if self.custom is not None else self.kind + "List"

    @property
    def definition(self) -> str:
        """The name of this kind's schema in the OpenAPI definitions (official, or built from a CRD)."""
        if self.custom is not None:
            return CustomResource.definition_name(self.group, self.version, self.kind)
        if self.group in _DEFINITION_PREFIX:
            return f"{_DEFINITION_PREFIX[self.group]}.{self.version}.{self.kind}"
        return f"io.k8s.api.{_DEFINITION_PACKAGE[self.group]}.{self.version}.{self.kind}"

    @property
    def storage_prefix(self) -> str:
        """Key prefix in storage (ends with '/'); shared by every version of a resource."""
        group = self.storage_group if self.storage_group is not None else self.group
        return f"/registry/{group or 'core'}/{self.plural}/"

    @property
    def stored_version(self) -> str:
        group = self.storage_group if self.storage_group is not None else self.group
        version = self.storage_version or self.version
        return f"{group}/{version}" if group else version

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


def _r(group: str, version: str, kind: str, plural: str, namespaced: bool = True, **kw) -> ResourceInfo:
    return ResourceInfo(group, version, kind, plural, namespaced, **kw)


def _in_discovery_order(resources: tuple[ResourceInfo, ...]) -> tuple[ResourceInfo, ...]:
    """Group by group, in GROUP_ORDER; within a group the order written below (preferred version first)."""
    def rank(info: ResourceInfo) -> int:
        return GROUP_ORDER.index(info.group) if info.group in GROUP_ORDER else len(GROUP_ORDER)
    return tuple(sorted(resources, key=rank))


# Kubernetes' own extension points: `kubectl get api-extensions` lists them.
_API_EXTENSIONS = ("api-extensions",)

BUILTIN_RESOURCES: tuple[ResourceInfo, ...] = _in_discovery_order((
    # core/v1
    _r("", "v1", "Namespace", "namespaces", False, short_names=("ns",), subresources=("status", "finalize"),
       verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    _r("", "v1", "Pod", "pods", short_names=("po",), categories=("all",),
       subresources=("status", "binding", "eviction", "ephemeralcontainers")),
    _r("", "v1", "Service", "services", short_names=("svc",), categories=("all",), subresources=("status",)),
    _r("", "v1", "Endpoints", "endpoints", short_names=("ep",), single_name="endpoints",
       deprecation="v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice"),
    _r("", "v1", "ConfigMap", "configmaps", short_names=("cm",)),
    _r("", "v1", "Secret", "secrets"),
    _r("", "v1", "ServiceAccount", "serviceaccounts", short_names=("sa",), subresources=("token",)),
    _r("", "v1", "Node", "nodes", False, short_names=("no",), subresources=("status",)),
    _r("", "v1", "Event", "events", short_names=("ev",)),
    _r("", "v1", "PersistentVolume", "persistentvolumes", False, short_names=("pv",), subresources=("status",)),
    _r("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", short_names=("pvc",),
       subresources=("status",)),
    _r("", "v1", "ResourceQuota", "resourcequotas", short_names=("quota",), subresources=("status",)),
    _r("", "v1", "LimitRange", "limitranges", short_names=("limits",)),
    _r("", "v1", "ReplicationController", "replicationcontrollers", short_names=("rc",), categories=("all",),
       subresources=("status", "scale")),
    _r("", "v1", "PodTemplate", "podtemplates"),
    # Computed on each request from the components' health, never stored.
    _r("", "v1", "ComponentStatus", "componentstatuses", False, short_names=("cs",), verbs=("get", "list"),
       deprecation="v1 ComponentStatus is deprecated in v1.19+"),
    # apps/v1
    _r("apps", "v1", "Deployment", "deployments", short_names=("deploy",), categories=("all",),
       subresources=("status", "scale")),
    _r("apps", "v1", "ReplicaSet", "replicasets", short_names=("rs",), categories=("all",),
       subresources=("status", "scale")),
    _r("apps", "v1", "StatefulSet", "statefulsets", short_names=("sts",), categories=("all",),
       subresources=("status", "scale")),
    _r("apps", "v1", "DaemonSet", "daemonsets", short_names=("ds",), categories=("all",),
       subresources=("status",)),
    _r("apps", "v1", "ControllerRevision", "controllerrevisions"),
    # authentication.k8s.io/v1 and authorization.k8s.io/v1: reviews, answered and never stored
    _r("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", False, verbs=("create",)),
    _r("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", False, verbs=("create",)),
    _r("authorization.k8s.io", "v1", "LocalSubjectAccessReview", "localsubjectaccessreviews", verbs=("create",)),
    _r("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", False,
       verbs=("create",)),
    _r("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", False, verbs=("create",)),
    _r("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews", False, verbs=("create",)),
    # batch/v1
    _r("batch", "v1", "Job", "jobs", categories=("all",), subresources=("status",)),
    _r("batch", "v1", "CronJob", "cronjobs", short_names=("cj",), categories=("all",), subresources=("status",)),
    # autoscaling: v2 is stored, v1 is converted
    _r("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", short_names=("hpa",),
       categories=("all",), subresources=("status",)),
    _r("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", short_names=("hpa",),
       categories=("all",), subresources=("status",), storage_version="v2"),
    # networking.k8s.io/v1
    _r("networking.k8s.io", "v1", "Ingress", "ingresses", short_names=("ing",), subresources=("status",)),
    _r("networking.k8s.io", "v1", "IngressClass", "ingressclasses", False),
    _r("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", short_names=("netpol",)),
    _r("networking.k8s.io", "v1", "IPAddress", "ipaddresses", False, short_names=("ip",)),
    _r("networking.k8s.io", "v1", "ServiceCIDR", "servicecidrs", False, subresources=("status",)),
    # storage.k8s.io/v1
    _r("storage.k8s.io", "v1", "StorageClass", "storageclasses", False, short_names=("sc",)),
    _r("storage.k8s.io", "v1", "CSIDriver", "csidrivers", False),
    _r("storage.k8s.io", "v1", "CSINode", "csinodes", False),
    _r("storage.k8s.io", "v1", "CSIStorageCapacity", "csistoragecapacities"),
    _r("storage.k8s.io", "v1", "VolumeAttachment", "volumeattachments", False, subresources=("status",)),
    _r("storage.k8s.io", "v1", "VolumeAttributesClass", "volumeattributesclasses", False, short_names=("vac",)),
    # rbac.authorization.k8s.io/v1
    _r("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    _r("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
    _r("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
    _r("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False),
    # coordination.k8s.io/v1
    _r("coordination.k8s.io", "v1", "Lease", "leases"),
    # discovery.k8s.io/v1
    _r("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
    # policy/v1
    _r("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", short_names=("pdb",),
       subresources=("status",)),
    # scheduling.k8s.io/v1
    _r("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", False, short_names=("pc",)),
    # events.k8s.io/v1 shares storage with core/v1 events
    _r("events.k8s.io", "v1", "Event", "events", short_names=("ev",), storage_group="", storage_version="v1"),
    # apiextensions.k8s.io/v1
    _r("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", False,
       short_names=("crd", "crds"), categories=_API_EXTENSIONS, subresources=("status",)),
    # admissionregistration.k8s.io/v1: stored configuration of admission webhooks and policies
    _r("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations",
       False, categories=_API_EXTENSIONS),
    _r("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies", False,
       categories=_API_EXTENSIONS, subresources=("status",)),
    _r("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding",
       "validatingadmissionpolicybindings", False, categories=_API_EXTENSIONS),
    _r("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations",
       False, categories=_API_EXTENSIONS),
    # apiregistration.k8s.io/v1
    _r("apiregistration.k8s.io", "v1", "APIService", "apiservices", False, categories=_API_EXTENSIONS,
       subresources=("status",)),
    # certificates.k8s.io/v1
    _r("certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests", False,
       short_names=("csr",), subresources=("approval", "status")),
    # flowcontrol.apiserver.k8s.io/v1
    _r("flowcontrol.apiserver.k8s.io", "v1", "FlowSchema", "flowschemas", False, subresources=("status",)),
    _r("flowcontrol.apiserver.k8s.io", "v1", "PriorityLevelConfiguration", "prioritylevelconfigurations", False,
       subresources=("status",)),
    # node.k8s.io/v1
    _r("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", False),
    # resource.k8s.io/v1: dynamic resource allocation
    _r("resource.k8s.io", "v1", "DeviceClass", "deviceclasses", False),
    _r("resource.k8s.io", "v1", "ResourceClaim", "resourceclaims", subresources=("status",)),
    _r("resource.k8s.io", "v1", "ResourceClaimTemplate", "resourceclaimtemplates"),
    _r("resource.k8s.io", "v1", "ResourceSlice", "resourceslices", False),
))

# Preferred version per group, in the order discovery lists groups.
PREFERRED_VERSIONS: dict[str, str] = {}
for _info in BUILTIN_RESOURCES:
    PREFERRED_VERSIONS.setdefault(_info.group, _info.version)


class ResourceCatalog:
    """Look-ups over the served resources: the built-ins, and custom resources the CRD controller adds and
    removes while the server runs."""

    def __init__(self, resources: tuple[ResourceInfo, ...] = BUILTIN_RESOURCES) -> None:
        self._by_gvr: dict[tuple[str, str, str], ResourceInfo] = {}
        self._by_gvk: dict[tuple[str, str, str], ResourceInfo] = {}
        for info in resources:
            self.add(info)

    def add(self, info: ResourceInfo) -> None:
        self._by_gvr[(info.group, info.version, info.plural)] = info
        self._by_gvk[(info.group, info.version, info.kind)] = info

    def remove(self, info: ResourceInfo) -> None:
        """Stop serving a resource (a custom resource whose CRD went away)."""
        if self._by_gvr.get((info.group, info.version, info.plural)) == info:
            del self._by_gvr[(info.group, info.version, info.plural)]
        if self._by_gvk.get((info.group, info.version, info.kind)) == info:
            del self._by_gvk[(info.group, info.version, info.kind)]

    def resource(self, group: str, version: str, plural: str) -> ResourceInfo | None:
        return self._by_gvr.get((group, version, plural))

    def kind(self, group: str, version: str, kind: str) -> ResourceInfo | None:
        return self._by_gvk.get((group, version, kind))

    def all(self) -> list[ResourceInfo]:
        return list(self._by_gvr.values())

    def group_versions(self) -> dict[str, list[str]]:
        """group -> versions, preferred first."""
        out: dict[str, list[str]] = {}
        for info in self._by_gvr.values():
            versions = out.setdefault(info.group, [])
            if info.version not in versions:
                versions.append(info.version)
        return out

    def in_group_version(self, group: str, version: str) -> list[ResourceInfo]:
        return [i for i in self._by_gvr.values() if i.group == group and i.version == version]
