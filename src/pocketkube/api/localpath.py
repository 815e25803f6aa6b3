"""The built-in local-path provisioner's conventions, shared by the PersistentVolume controller that makes its
volumes and the kubelet that creates and removes their directories on the node.

A volume of it is a hostPath PersistentVolume under STORAGE_ROOT on one node. It carries FINALIZER from its
creation: once the controller deletes a released volume (reclaim policy Delete), the volume's node removes
the directory, then the finalizer, and only then does the object go."""

PROVISIONER = "pocketkube.io/local-path"
ANN_PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
STORAGE_ROOT = "/var/lib/pocketkube/storage"
FINALIZER = "pocketkube.io/local-path-directory"
