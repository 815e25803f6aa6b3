"""Admission: the mutating then validating plugins every write passes (k8s.io/apiserver/pkg/admission)."""

from .interfaces import (
    CONNECT,
    CREATE,
    DELETE,
    UPDATE,
    AdmissionAttributes,
    AdmissionChain,
    MutatingPlugin,
    ValidatingPlugin,
    forbidden,
)
from .plugins import PLUGIN_NAMES, build_chain
from .state import ClusterState

__all__ = ["CONNECT", "CREATE", "DELETE", "PLUGIN_NAMES", "UPDATE", "AdmissionAttributes", "AdmissionChain",
           "ClusterState", "MutatingPlugin", "ValidatingPlugin", "build_chain", "forbidden"]
