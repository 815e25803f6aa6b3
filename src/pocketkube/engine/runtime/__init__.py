"""Running containers: the OCI config.json, cgroups, pinned namespaces, the runc/crun CLI and the monitor."""
