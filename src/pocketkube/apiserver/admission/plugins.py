"""The admission plugins this server has, in upstream's order (kube-apiserver's AllOrderedPlugins)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .interfaces import AdmissionChain, MutatingPlugin, ValidatingPlugin
from .limitranger import LimitRanger
from .namespace import NamespaceLifecycle
from .pods import DefaultTolerationSeconds, Priority, ServiceAccount
from .resourcequota import ResourceQuota
from .runtimeclass import RuntimeClass
from .state import ClusterState
from .storageclass import DefaultStorageClass
from .webhook import MutatingAdmissionWebhook, ValidatingAdmissionWebhook

# All on by default, as in kube-apiserver's default plugin set.
PLUGIN_NAMES = ("NamespaceLifecycle", "LimitRanger", "ServiceAccount", "Priority", "DefaultTolerationSeconds",
                "DefaultStorageClass", "RuntimeClass", "MutatingAdmissionWebhook", "ValidatingAdmissionWebhook", "ResourceQuota")


def build_chain(state: ClusterState, disabled: Iterable[str] = ()) -> AdmissionChain:
    """The chain of every plugin not named in `disabled` (--disable-admission-plugins)."""
    off = set(disabled)
    unknown = off - set(PLUGIN_NAMES)
    if unknown:
        raise ValueError(f"unknown admission plugins: {', '.join(sorted(unknown))}")
    factories: dict[str, Any] = {
        "NamespaceLifecycle": lambda: NamespaceLifecycle(state),
        "LimitRanger": lambda: LimitRanger(state),
        "ServiceAccount": lambda: ServiceAccount(state),
        "Priority": lambda: Priority(state),
        "DefaultTolerationSeconds": DefaultTolerationSeconds,
        "DefaultStorageClass": lambda: DefaultStorageClass(state),
        "RuntimeClass": lambda: RuntimeClass(state),
        "MutatingAdmissionWebhook": lambda: MutatingAdmissionWebhook(state),
        "ValidatingAdmissionWebhook": lambda: ValidatingAdmissionWebhook(state),
        "ResourceQuota": lambda: ResourceQuota(state),
    }
    plugins = [factories[name]() for name in PLUGIN_NAMES if name not in off]
    # A plugin takes part in each phase it implements, keeping the one order.
    return AdmissionChain(mutating=[p for p in plugins if isinstance(p, MutatingPlugin)],
                          validating=[p for p in plugins if isinstance(p, ValidatingPlugin)])
