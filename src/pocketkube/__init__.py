"""pocketkube: Kubernetes and the container engine beneath it, in Python."""

__version__ = "0.1.0"
# The Kubernetes version whose API pocketkube serves.
KUBERNETES_VERSION = "v1.37.0"
