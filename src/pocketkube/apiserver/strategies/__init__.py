"""The per-kind Strategies of the built-in resources, and the set the registry looks them up in.

    strategies = build_strategies(catalog, service_cidr="10.43.0.0/16", node_port_range=(30000, 32767))
    await strategies.load_existing({"Service": stored_services})   # once, at start-up
    strategy = strategies.strategy_for(info)
"""

from __future__ import annotations

from collections.abc import Callable

from pocketkube.api.kinds import ResourceCatalog, ResourceInfo
from pocketkube.apiserver.crd.strategy import CustomResourceDefinitionStrategy, CustomResourceStrategy
from pocketkube.apiserver.strategy import Obj, Strategy

from . import (
    admission,
    apiregistration,
    apps,
    batch,
    certificates,
    cluster,
    core_misc,
    core_pods,
    core_services,
    flowcontrol,
    ipam,
    networking,
    node,
    podtemplates,
    rbac,
    resource,
    storage,
)
from .allocators import ClusterIPAllocator, NodePortAllocator

Key = tuple[str, str, str]

# (group, version, plural) -> Strategy class, for every built-in resource but Services (which need allocators).
_STRATEGIES: dict[Key, Callable[[ResourceInfo], Strategy]] = {
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions"): CustomResourceDefinitionStrategy,
    ("", "v1", "namespaces"): core_misc.NamespaceStrategy,
    ("", "v1", "pods"): core_pods.PodStrategy,
    ("", "v1", "endpoints"): core_services.EndpointsStrategy,
    ("", "v1", "configmaps"): core_misc.ConfigMapStrategy,
    ("", "v1", "secrets"): core_misc.SecretStrategy,
    ("", "v1", "serviceaccounts"): core_misc.ServiceAccountStrategy,
    ("", "v1", "nodes"): core_misc.NodeStrategy,
    ("", "v1", "events"): core_misc.EventStrategy,
    ("", "v1", "persistentvolumes"): core_misc.PersistentVolumeStrategy,
    ("", "v1", "persistentvolumeclaims"): core_misc.PersistentVolumeClaimStrategy,
    ("", "v1", "resourcequotas"): core_misc.ResourceQuotaStrategy,
    ("", "v1", "limitranges"): core_misc.LimitRangeStrategy,
    ("", "v1", "replicationcontrollers"): apps.ReplicationControllerStrategy,
    ("apps", "v1", "deployments"): apps.DeploymentStrategy,
    ("apps", "v1", "replicasets"): apps.ReplicaSetStrategy,
    ("apps", "v1", "statefulsets"): apps.StatefulSetStrategy,
    ("apps", "v1", "daemonsets"): apps.DaemonSetStrategy,
    ("apps", "v1", "controllerrevisions"): apps.ControllerRevisionStrategy,
    ("batch", "v1", "jobs"): batch.JobStrategy,
    ("batch", "v1", "cronjobs"): batch.CronJobStrategy,
    ("autoscaling", "v2", "horizontalpodautoscalers"): cluster.HorizontalPodAutoscalerStrategy,
    ("autoscaling", "v1", "horizontalpodautoscalers"): cluster.HorizontalPodAutoscalerV1Strategy,
    ("networking.k8s.io", "v1", "ingresses"): networking.IngressStrategy,
    ("networking.k8s.io", "v1", "ingressclasses"): networking.IngressClassStrategy,
    ("networking.k8s.io", "v1", "networkpolicies"): networking.NetworkPolicyStrategy,
    ("storage.k8s.io", "v1", "storageclasses"): cluster.StorageClassStrategy,
    ("rbac.authorization.k8s.io", "v1", "roles"): rbac.RoleStrategy,
    ("rbac.authorization.k8s.io", "v1", "clusterroles"): rbac.ClusterRoleStrategy,
    ("rbac.authorization.k8s.io", "v1", "rolebindings"): rbac.RoleBindingStrategy,
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings"): rbac.RoleBindingStrategy,
    ("coordination.k8s.io", "v1", "leases"): cluster.LeaseStrategy,
    ("discovery.k8s.io", "v1", "endpointslices"): cluster.EndpointSliceStrategy,
    ("policy", "v1", "poddisruptionbudgets"): cluster.PodDisruptionBudgetStrategy,
    ("scheduling.k8s.io", "v1", "priorityclasses"): cluster.PriorityClassStrategy,
    ("events.k8s.io", "v1", "events"): core_misc.EventsV1Strategy,
    ("", "v1", "podtemplates"): podtemplates.PodTemplateStrategy,
    ("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations"):
        admission.MutatingWebhookConfigurationStrategy,
    ("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations"):
        admission.ValidatingWebhookConfigurationStrategy,
    ("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies"):
        admission.ValidatingAdmissionPolicyStrategy,
    ("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings"):
        admission.ValidatingAdmissionPolicyBindingStrategy,
    ("apiregistration.k8s.io", "v1", "apiservices"): apiregistration.APIServiceStrategy,
    ("certificates.k8s.io", "v1", "certificatesigningrequests"): certificates.CertificateSigningRequestStrategy,
    ("flowcontrol.apiserver.k8s.io", "v1", "flowschemas"): flowcontrol.FlowSchemaStrategy,
    ("flowcontrol.apiserver.k8s.io", "v1", "prioritylevelconfigurations"):
        flowcontrol.PriorityLevelConfigurationStrategy,
    ("networking.k8s.io", "v1", "ipaddresses"): ipam.IPAddressStrategy,
    ("networking.k8s.io", "v1", "servicecidrs"): ipam.ServiceCIDRStrategy,
    ("node.k8s.io", "v1", "runtimeclasses"): node.RuntimeClassStrategy,
    ("resource.k8s.io", "v1", "deviceclasses"): resource.DeviceClassStrategy,
    ("resource.k8s.io", "v1", "resourceclaims"): resource.ResourceClaimStrategy,
    ("resource.k8s.io", "v1", "resourceclaimtemplates"): resource.ResourceClaimTemplateStrategy,
    ("resource.k8s.io", "v1", "resourceslices"): resource.ResourceSliceStrategy,
    ("storage.k8s.io", "v1", "csidrivers"): storage.CSIDriverStrategy,
    ("storage.k8s.io", "v1", "csinodes"): storage.CSINodeStrategy,
    ("storage.k8s.io", "v1", "csistoragecapacities"): storage.CSIStorageCapacityStrategy,
    ("storage.k8s.io", "v1", "volumeattachments"): storage.VolumeAttachmentStrategy,
    ("storage.k8s.io", "v1", "volumeattributesclasses"): storage.VolumeAttributesClassStrategy,
}


class StrategySet:
    """Strategy per served resource; resources with no special behaviour (custom resources) get the base one."""

    def __init__(self, catalog: ResourceCatalog, ips: ClusterIPAllocator, node_ports: NodePortAllocator) -> None:
        self.catalog = catalog
        self.ips = ips
        self.node_ports = node_ports
        self._by_key: dict[Key, Strategy] = {}
        for info in catalog.all():
            self._by_key[self._key(info)] = self._make(info)

    @staticmethod
    def _key(info: ResourceInfo) -> Key:
        return (info.group, info.version, info.plural)

    def _make(self, info: ResourceInfo) -> Strategy:
        key = self._key(info)
        if info.custom is not None:
            return CustomResourceStrategy(info)
        if key == ("", "v1", "services"):
            return core_services.ServiceStrategy(info, self.ips, self.node_ports)
        factory = _STRATEGIES.get(key)
        return factory(info) if factory else Strategy(info)

    def strategy_for(self, info: ResourceInfo | Key) -> Strategy:
        if isinstance(info, tuple):
            found = self.catalog.resource(*info)
            if found is None:
                raise KeyError(f"no resource {info}")
            info = found
        key = self._key(info)
        strategy = self._by_key.get(key)
        if strategy is None or strategy.info != info:
            # A resource added to the catalogue later (a CRD), or replaced with a new definition.
            strategy = self._make(info)
            self._by_key[key] = strategy
        return strategy

    def __getitem__(self, info: ResourceInfo | Key) -> Strategy:
        return self.strategy_for(info)

    async def load_existing(self, kind_objects: dict[str, list[Obj]]) -> None:
        """Rebuild allocator state from what is stored (call once at start-up with every Service)."""
        services = self.strategy_for(("", "v1", "services"))
        if not isinstance(services, core_services.ServiceStrategy):
            raise TypeError("the services resource has no ServiceStrategy")
        for svc in kind_objects.get("Service", []) + kind_objects.get("services", []):
            services.load(svc)


def build_strategies(catalog: ResourceCatalog, *, service_cidr: str = "10.43.0.0/16",
                     node_port_range: tuple[int, int] = (30000, 32767)) -> StrategySet:
    return StrategySet(catalog, ClusterIPAllocator(service_cidr), NodePortAllocator(node_port_range))


__all__ = ["StrategySet", "build_strategies"]
